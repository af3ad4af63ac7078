"""The models a server holds: each loaded once, with its engine, its card and its lines for ``novel``."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from charlm.api import LanguageModel, load
from charlm.errors import CharlmError
from charlm.serve.engine import Engine

CURVE_POINTS = 400  # the card's training curve, thinned to at most this many points


class ServedModel:
    """One model on one device, its engine, and what ``/v1/models`` says of it."""

    def __init__(self, name: str, lm: LanguageModel, max_streams: int, queue_limit: int):
        self.name, self.lm = name, lm
        self.engine = Engine(lm.model, lm.vocab, max_streams, queue_limit)
        self.created = int(time.time())
        self._lines: set[str] | None = None
        self._lines_lock = threading.Lock()

    @property
    def lines_model(self) -> bool:
        return self.lm.kind.unit == "lines"

    def training_lines(self) -> set[str]:
        """The training set's lines (read on first use; never on the event loop)."""
        with self._lines_lock:
            if self._lines is None:
                self._lines = self.lm.training_lines()
            return self._lines

    def card(self, curve: bool = False) -> dict[str, Any]:
        summary = self.lm.checkpoint.summary()
        card = {
            "id": self.name, "object": "model", "created": self.created, "owned_by": "charlm",
            "charlm": {
                "checkpoint": summary["checkpoint"], "mode": summary["mode"], "parameters": summary["parameters"],
                "step": summary["step"], "tokens_seen": summary["tokens_seen"], "train_time_s": summary["train_time_s"],
                "best_val_loss": summary["best_val_loss"], "bidirectional": summary["bidirectional"],
                "vocab": list(self.lm.vocab.chars), "documents": self.lm.vocab.document is not None,
                "device": str(self.lm.device), "config": summary["config"], "sample": summary["config"]["sample"],
            },
        }
        if curve:
            card["charlm"]["curve"] = training_curve(Path(summary["checkpoint"]).parent / "metrics.jsonl")
        return card


def training_curve(path: Path) -> dict[str, list[list[float]]]:
    """(step, loss) of the train and eval events of a run's metrics.jsonl; empty without one."""
    train: list[list[float]] = []
    val: list[list[float]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {"train": [], "val": []}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if event.get("event") == "train" and isinstance(event.get("loss"), (int, float)):
            train.append([event["step"], event["loss"]])
        elif event.get("event") == "eval" and isinstance(event.get("val_loss"), (int, float)):
            val.append([event["step"], event["val_loss"]])
    stride = max(1, len(train) // CURVE_POINTS)
    return {"train": train[::stride], "val": val}


def load_models(paths: list[str], device: str, max_streams: int, queue_limit: int) -> dict[str, ServedModel]:
    """Each checkpoint or run directory once, named by its run directory (or file stem), made unique."""
    models: dict[str, ServedModel] = {}
    for path in paths:
        lm = load(path, device=device)
        name = _name(Path(lm.path), models)
        models[name] = ServedModel(name, lm, max_streams, queue_limit)
    if not models:
        raise CharlmError("give at least one run directory or checkpoint to serve")
    return models


def _name(checkpoint: Path, taken: dict[str, Any]) -> str:
    base = checkpoint.parent.name if checkpoint.stem in ("best", "last") else checkpoint.stem
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "model"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name
