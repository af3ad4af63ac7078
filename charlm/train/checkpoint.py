"""Where a checkpoint is written and read: the ``Checkpoint`` type, and the safe file beneath it.

A checkpoint holds what the model is (config, vocabulary, parameter count, precision, the text it
read) and, part by part, where training stands (``Run.parts`` in charlm/train/setup.py: the model's
weights, the weight average, optimizer, loss scale, counters, carried streams, log window and
random states), so that a resume continues exactly. Every reader goes through ``Checkpoint.load``;
the weights sampling and evaluation use are ``Checkpoint.weights`` (the average, when there is one).

On disk it is a dict of plain tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a file that carries anything else (such as a pickled object
that would run code) is refused, not executed. Writes go to a temporary file that is fsynced and
then renamed over the target, so a crash at any moment leaves the previous checkpoint intact.
Files of earlier formats are lifted to the current one on load, one version at a time (``MIGRATIONS``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charlm.config import Config
from charlm.data.vocab import MARKER, Vocab
from charlm.errors import CharlmError
from charlm.fsutil import atomic_open
from charlm.model.network import CharRNN
from charlm.train.state import TrainState
from charlm.version import __version__

FORMAT_NAME = "charlm-checkpoint"
FORMAT_VERSION = 3
PARTS = ("model", "average", "optimizer", "scaler", "state", "streams", "log_window", "rng")
META = ("format", "format_version", "charlm_version", "config", "vocab", "parameters", "precision", "data")


@dataclass
class TextRecord:
    """The text a run trained on: where it was, and its checksum (a resume checks it is unchanged)."""

    path: str  # as the user gave it, for messages
    sha256: str  # of the file, or for many files of their manifest (charlm.data.tokens)
    splits: dict[str, dict[str, int]] | None = None  # many files: files and characters of each split
    source: dict[str, list[str]] | None = None  # what was read (TextSource.to_dict, absolute paths)

    def to_dict(self) -> dict[str, Any]:
        record = {"path": self.path, "sha256": self.sha256}
        for name in ("splits", "source"):
            if getattr(self, name) is not None:
                record[name] = getattr(self, name)
        return record


@dataclass
class Checkpoint:
    config: Config
    vocab: Vocab
    parameters: int
    precision: str  # what training ran in: fp32, bf16 or fp16
    text: TextRecord
    parts: dict[str, Any]  # each part of the run's training state, by name (PARTS)
    charlm_version: str = __version__
    source: str = field(default="checkpoint", compare=False)  # where it was loaded from, for messages
    format_version: int = field(default=FORMAT_VERSION, compare=False)  # the file's (to_dict writes the newest)

    @property
    def state(self) -> TrainState:
        """The run's counters (step, clock, best val loss, ...)."""
        state = TrainState()
        state.load_state_dict(self.parts["state"])
        return state

    @property
    def step(self) -> int:
        return self.parts["state"]["step"]

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The published weights: what sampling and evaluation use (averaged when train.ema_decay is on)."""
        average = self.parts["average"]
        return average["model"] if average is not None else self.parts["model"]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "charlm_version": self.charlm_version,
                "config": self.config.to_dict(), "vocab": self.vocab.to_list(), "parameters": self.parameters,
                "precision": self.precision, "data": self.text.to_dict(), **self.parts}

    @classmethod
    def from_dict(cls, payload: dict[str, Any], source: str = "checkpoint") -> "Checkpoint":
        """The checkpoint a loaded file holds; anything missing or malformed is one CharlmError line."""
        version = payload.get("format_version", FORMAT_VERSION)
        try:
            payload = migrate(payload)
            return cls(config=Config.from_dict(payload["config"], source=f"{source} config"),
                       vocab=Vocab(payload["vocab"]), parameters=payload["parameters"],
                       precision=payload["precision"], text=TextRecord(**payload["data"]),
                       parts={name: payload[name] for name in PARTS}, charlm_version=payload["charlm_version"],
                       source=source, format_version=version)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CharlmError(f"{source} is a damaged charlm checkpoint ({_first_line(exc)})") from None

    def save(self, path: str | Path) -> None:
        """Write atomically: ``path`` holds the old checkpoint or this one, never part of one. Every
        tensor is written from the CPU, so a plain ``torch.load(path, weights_only=True)`` works on a
        machine without the GPU the run trained on."""
        _write(path, on_cpu(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "Checkpoint":
        """A checkpoint file, or a run directory's best.pt (else last.pt), loaded onto the CPU, safely."""
        path = resolve_checkpoint(path)
        return cls.from_dict(_read(path), str(path))

    def build_model(self, raw: bool = False) -> CharRNN:
        """The model with the published weights (``raw``: the optimizer's own), on the CPU."""
        model = CharRNN.from_config(self.config.model, len(self.vocab))
        try:
            model.load_state_dict(self.parts["model"] if raw else self.weights)
        except RuntimeError as exc:
            raise CharlmError(f"{self.source} is a damaged charlm checkpoint: its weights do not fit its model"
                              f" ({_first_line(exc)})") from None
        return model

    def summary(self) -> dict[str, Any]:
        """What ``charlm info`` reports, as JSON-ready values."""
        state = self.state
        return {
            "checkpoint": self.source, "charlm_version": self.charlm_version, "format_version": self.format_version,
            "vocab_size": len(self.vocab), "vocab": "".join(c for c in self.vocab.chars if c != MARKER),
            "mode": self.config.data.mode, "parameters": self.parameters, "step": state.step,
            "tokens_seen": state.tokens_seen, "train_time_s": state.train_time,
            "best_val_loss": state.best_val_loss, "precision": self.precision,
            "bidirectional": self.config.model.bidirectional,
            "data": self.text.to_dict(), "config": self.config.to_dict(),
        }


# ---- earlier formats ------------------------------------------------------------------------------

def _from_format_1(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the training state's fields at the top level (later versions of it added the NaN
    counters, the log window and the scaler)."""
    state = {
        "step": payload["step"], "tokens_seen": payload["tokens_seen"],
        "train_time": payload["scheduler"]["train_time"], "best_val_loss": payload["best_val_loss"],
        "evals_since_best": payload["evals_since_best"], "bad_steps": payload.get("bad_steps", 0),
        "skipped_steps": payload.get("skipped_steps", 0),
        "carried": {direction: payload[key] for direction, key in
                    (("forward", "carried_state"), ("backward", "carried_state_backward")) if key in payload},
        "log_window": payload.get("log_window", {"sums": {}, "good_steps": 0}),
    }
    data = payload["data"]
    return {**payload, "state": state, "data": {"path": data["path"], "sha256": data["sha256"]},
            "scaler": payload.get("scaler"), "rng_ranks": payload.get("rng_ranks")}


def _from_format_2(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 2 grouped the counters, carried states and log window under ``state``, kept the
    published weights as ``model`` and the raw ones as ``raw_model`` (with weight averaging), and
    recorded a text by its path alone; its first files had no ``overflow_steps`` and kept the log
    window's good steps beside its sums."""
    old = payload["state"]
    window = old["log_window"]
    counters = {key: old[key] for key in ("step", "tokens_seen", "train_time", "best_val_loss", "evals_since_best",
                                          "bad_steps", "skipped_steps")}
    raw = payload.get("raw_model")
    lifted = {key: payload[key] for key in META if key in payload}
    if "splits" not in lifted["data"]:  # one file: the path it was read from is what it read
        lifted["data"] = {**lifted["data"], "source": {"paths": [lifted["data"]["path"]]}}
    return {**lifted, "model": raw if raw is not None else payload["model"],
            "average": None if raw is None else {"model": payload["model"], "updates": payload.get("ema_updates", 0)},
            "optimizer": payload["optimizer"], "scaler": payload["scaler"],
            "state": {**counters, "overflow_steps": old.get("overflow_steps", 0)},
            "streams": old["carried"], "log_window": {"good_steps": window.get("good_steps", 0), **window["sums"]},
            "rng": payload["rng_ranks"] or [payload["rng"]]}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_format_1, 2: _from_format_2}


def migrate(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload of any earlier format in the current one, lifted a version at a time."""
    version = payload.get("format_version", FORMAT_VERSION)
    while version < FORMAT_VERSION:
        payload, version = MIGRATIONS[version](payload), version + 1
    return payload


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor inside its dicts, lists and tuples moved to the CPU (the optimizer's
    state and the RNG states nest them)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:100] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if isinstance(exc, KeyError) else text or type(exc).__name__


# ---- the file: safe to read, atomic to write --------------------------------------------------

def _write(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as handle:
        writer = _KeepWriteError(handle)
        try:
            torch.save(payload, writer)
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


def _read(path: Path) -> dict[str, Any]:
    """The file's dict, loaded onto the CPU with weights_only; every way it can be wrong is one line."""
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
        raise CharlmError(f"{path} is not a readable charlm checkpoint (truncated or corrupt? {message})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CharlmError(f"{path} is not a charlm checkpoint: train a model with `charlm train` first")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharlmError(
            f"{path} has checkpoint format {version}, newer than this charlm ({__version__}) reads"
            f" ({FORMAT_VERSION}): upgrade charlm"
        )
    return payload
