"""Run logs: ``metrics.jsonl`` (one JSON object per event) and TensorBoard events."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError
from charlm.fsutil import atomic_write_text, describe_os_error

# Scalars that go to TensorBoard, as (event, key) -> tag.
TENSORBOARD_TAGS = {
    ("train", "loss"): "train/loss",
    ("train", "bpc"): "train/bpc",
    ("train", "lr"): "train/learning_rate",
    ("train", "grad_norm"): "train/grad_norm",
    ("train", "clip_share"): "train/clip_share",
    ("train", "tokens_per_s"): "train/tokens_per_s",
    ("train", "loss_forward"): "train/loss_forward",
    ("train", "loss_backward"): "train/loss_backward",
    ("eval", "val_loss"): "val/loss",
    ("eval", "val_loss_forward"): "val/loss_forward",
    ("eval", "val_loss_backward"): "val/loss_backward",
    ("eval", "val_bpc"): "val/bpc",
}


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event in a metrics file; a torn or garbled line (a crash mid-write) is skipped."""
    events = []
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def truncate_metrics(path: str | Path, last_step: int) -> None:
    """Drop events logged after ``last_step`` (work a crash lost and a resume will redo)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [e for e in read_metrics(path) if not isinstance(e.get("step"), int) or e["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in kept))


class RunLog:
    """Appends events to metrics.jsonl and mirrors their scalars (and samples) to TensorBoard."""

    def __init__(self, out_dir: Path, tensorboard: bool = True, purge_from: int | None = None):
        """``purge_from``: on resume, the first step to redo; TensorBoard hides what was logged from it on."""
        self.path = out_dir / "metrics.jsonl"
        try:
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise CharlmError(describe_os_error(exc, self.path, "open")) from None
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge_from)

    def event(self, kind: str, step: int, **values: Any) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
        try:
            self._file.write(json.dumps({"event": kind, "step": step, **clean}) + "\n")
            self._file.flush()
        except OSError as exc:
            raise CharlmError(describe_os_error(exc, self.path, "append to")) from None
        if self._writer is not None:
            for key, value in values.items():
                tag = TENSORBOARD_TAGS.get((kind, key)) or (f"grad_norm/{key}" if kind == "grads" else None)
                if tag is not None and value is not None:
                    self._writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self._writer is not None:
            # Markdown code block keeps line breaks and spacing as the model wrote them.
            self._writer.add_text(tag, "```\n" + text + "\n```", step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


class NullLog:
    """What ranks other than 0 log to under torchrun: nothing."""

    def event(self, kind: str, step: int, **values: Any) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
