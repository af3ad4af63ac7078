"""Where a checkpoint is written and read.

A checkpoint is a dict of plain tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a file that carries anything else (such as a pickled object
that would run code) is refused, not executed. Writes go to a temporary file that is fsynced and
then renamed over the target, so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from charlm import __version__
from charlm.errors import CharlmError
from charlm.fsutil import atomic_open

FORMAT_NAME = "charlm-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically, stamped with the format and charlm versions."""
    stamped = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "charlm_version": __version__}
    stamped.update(payload)
    with atomic_open(path, "wb") as handle:
        writer = _KeepWriteError(handle)
        try:
            torch.save(stamped, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None  # atomic_open turns it into one line and cleans up
            raise


class _KeepWriteError:
    """A file wrapper for torch.save, which reports a failed write (disk full, file too large) as a
    RuntimeError about stream positions; this keeps the OSError behind it, so the user hears the cause."""

    def __init__(self, handle: Any):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its best.pt, else its last.pt)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CharlmError(f"{path} holds no checkpoint (best.pt or last.pt): give a run directory or a .pt file")
    if not path.exists():
        raise CharlmError(f"checkpoint {path} not found: give a .pt file or a run directory")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, safely; every way it can be wrong is one CharlmError line."""
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        if "Weights only load failed" in reason or "Unsupported" in str(exc):
            raise CharlmError(
                f"{path} was refused: it holds Python objects other than tensors and plain data, which"
                " could run code when loaded; only load checkpoints written by charlm"
            ) from None
        raise CharlmError(f"{path} is not a charlm checkpoint (unreadable: {reason[:120]})") from None
    except Exception as exc:  # a damaged file can fail anywhere inside the unpickler
        if isinstance(exc, IsADirectoryError):
            raise CharlmError(f"{path} is a directory without best.pt or last.pt") from None
        message = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            message = exc.strerror
        raise CharlmError(
            f"{path} is not a readable charlm checkpoint (truncated or corrupt? {message})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CharlmError(f"{path} is not a charlm checkpoint: train a model with `charlm train` first")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharlmError(
            f"{path} has checkpoint format {version}, newer than this charlm ({__version__}) reads"
            f" ({FORMAT_VERSION}): upgrade charlm"
        )
    return payload


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(states["cuda"])
        except RuntimeError:  # a different number of GPUs than at save time
            print("warning: could not restore the CUDA random state (different GPUs)", file=sys.stderr)
