"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from charlm.errors import CharlmError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry itself reaches the disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(exc: OSError, path: str | Path, action: str, elsewhere: str = "-o/--out") -> str:
    """One line naming the file, what failed, and what to do about it (``elsewhere``: the option
    that moves the file)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some disk space or write elsewhere with {elsewhere}"
    elif exc.errno == errno.EFBIG:
        hint = f"the file is over this system's file-size limit (ulimit -f): raise it or write elsewhere with {elsewhere}"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"check its permissions or write elsewhere with {elsewhere}"
    else:
        hint = "check the path"
    return f"cannot {action} {path}: {exc.strerror or exc} ({hint})"


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", elsewhere: str = "-o/--out") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CharlmError(describe_os_error(exc, path, "write", elsewhere)) from None
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; the file should get the usual mode
        text_args = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise CharlmError(describe_os_error(exc, path, "write", elsewhere)) from None
        raise
    _fsync_dir(directory)


def atomic_write_text(path: str | Path, text: str, elsewhere: str = "-o/--out") -> None:
    with atomic_open(path, "w", elsewhere) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes, elsewhere: str = "-o/--out") -> None:
    with atomic_open(path, "wb", elsewhere) as handle:
        handle.write(data)


def sha256_of(*paths: str | Path) -> str:
    """The sha256 of the files ``paths``, read one after the other, a megabyte at a time."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
