"""The run directory: one writer at a time, which checkpoint a resume continues from, and what a
resume may change.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``tensorboard/``, ``best.pt`` and
``last.pt``. While ``charlm train`` writes to it, it holds an OS lock on ``.lock`` in it. The
kernel drops that lock when the process ends, however it ends (``kill -9`` included), so a
crashed run never leaves the directory locked; the file itself only says who held it last.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from charlm.errors import CharlmError
from charlm.fsutil import describe_os_error

if TYPE_CHECKING:
    from charlm.config import Config
    from charlm.train.checkpoint import Checkpoint

LOCK_NAME = ".lock"
RUN_FILES = ("last.pt", "best.pt", "stable.pt", "metrics.jsonl", "config.yaml", "tensorboard")

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt

    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class RunLock:
    """Exclusive use of a run directory for as long as the ``with`` block runs."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CharlmError(describe_os_error(exc, self.path, "lock the run directory with")) from None
        if not _try_lock(fd):
            holder = _describe_holder(self.path)
            os.close(fd)
            raise CharlmError(
                f"{self.directory} is in use by another `charlm train`{holder}: wait for it to finish,"
                " stop it, or choose another -o/--out"
            )
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        self._fd = fd
        # Temporary files of an atomic write that a crash cut short; no one else writes here now.
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # The file stays: removing it would race with a process that has it open and is about to lock it.
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None


def _describe_holder(path: Path) -> str:
    try:
        owner: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return f" (pid {owner['pid']} on {owner['host']}, since {owner['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_not_in_use(directory: Path) -> None:
    """Refuse a directory that a running `charlm train` holds (the lock is taken and let go at once)."""
    with RunLock(directory):
        pass


def check_fresh(directory: Path) -> None:
    """Refuse to start a new run where one already is (its files would mix with ours)."""
    if (directory / "last.pt").exists() or (directory / "best.pt").exists():
        raise CharlmError(
            f"{directory} already holds a run: add --resume to continue it, or choose another -o/--out"
        )
    found = [name for name in RUN_FILES if (directory / name).exists()]
    if found:
        raise CharlmError(
            f"{directory} holds files of a run that stopped before its first checkpoint ({', '.join(found)}):"
            " delete them or choose another -o/--out"
        )


def newest_checkpoint(directory: Path) -> tuple[Path, "Checkpoint"]:
    """The full checkpoint a resume continues from: last.pt or best.pt, whichever is further along.

    Both carry the whole training state. best.pt is written at every improving evaluation and
    last.pt every ``checkpoint_interval`` steps, so after a crash best.pt can be the newer one.
    """
    from charlm.train.checkpoint import Checkpoint

    found = [(path, Checkpoint.load(path)) for path in (directory / "last.pt", directory / "best.pt")
             if path.is_file()]
    if not found:
        raise CharlmError(
            f"{directory} has no last.pt or best.pt to resume from: check the directory, or start a new run"
        )
    return max(found, key=lambda item: item[1].step)  # a tie goes to last.pt


# What a resume may change: the schedule, budgets and sampling, but nothing that makes it another
# run (the model, the data, how batches are cut and seeded).
RESUMABLE_SECTIONS = ("train", "sample")
RESUME_FIXED_KEYS = ("train.batch_size", "train.seq_len", "train.seed")


def resume_config(run_dir: Path, overrides: Sequence[tuple[str, Any]], check_lock: bool = True) -> "Config":
    """The run's own config with ``overrides`` applied, refusing those that would make it another run.

    Repeating a setting of the run is fine, so the run's original command plus ``--resume DIR``
    works. ``check_lock``: see first whether another process is still training there (under
    torchrun rank 0 alone looks).
    """
    from charlm.config import build_config

    if not run_dir.is_dir():
        raise CharlmError(f"no run directory {run_dir} to resume: check the path given to --resume")
    if check_lock:
        check_not_in_use(run_dir)  # a run still writing here is the better thing to report than its checkpoints
    path, checkpoint = newest_checkpoint(run_dir)
    saved = checkpoint.config  # read with the defaults of keys newer than the run; build_config copies it
    config = build_config(None, overrides, base=saved)
    for key, _ in overrides:
        if key in ("data.path", "data.corpus"):
            continue  # the same text may have moved; its checksum is checked against the run's
        section, name = key.split(".", 1)
        changed = getattr(getattr(config, section), name) != getattr(getattr(saved, section), name)
        if changed and (section not in RESUMABLE_SECTIONS or key in RESUME_FIXED_KEYS):
            raise CharlmError(f"{key} cannot change when resuming (it would be another run): start a new run,"
                              f" e.g. with --init-from {path}")
    return config


@contextlib.contextmanager
def run_directory(directory: Path, fresh: bool, owner: bool = True) -> Iterator[None]:
    """Exclusive use of ``directory`` for one run, created if need be; ``fresh`` refuses a directory
    that already holds a run. Only the ``owner`` (rank 0 under torchrun) creates and locks it. A run
    that fails before writing anything leaves no directory behind."""
    if not owner:
        yield
        return
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(describe_os_error(exc, directory, "create the run directory")) from None
    try:
        with RunLock(directory):
            if fresh:
                check_fresh(directory)
            yield
    except Exception:  # bad input, out of memory, a bug: a run that failed at once leaves no directory
        if created:
            remove_if_only_lock(directory)
        raise


def remove_if_only_lock(directory: Path) -> None:
    """Remove a run directory that holds nothing but its lock file (a run that failed at once)."""
    try:
        if [entry.name for entry in directory.iterdir()] == [LOCK_NAME]:
            (directory / LOCK_NAME).unlink()
            directory.rmdir()
    except OSError:
        pass
