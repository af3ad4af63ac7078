"""Where a training run stands: everything that changes from step to step and comes back on resume.

``TrainState`` is written into every checkpoint by ``to_checkpoint`` and read back by
``from_checkpoint``, its one mirror, so a resumed run continues exactly where the saved one was:
the same step, clock, best val loss and patience, NaN counters, carried hidden states and the
half-finished log window.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from charlm.distributed import Distributed

State = tuple[torch.Tensor, ...]  # a recurrent state, as charlm.model passes it around


@dataclass
class LogWindow:
    """Sums over the steps since the last ``train`` event, averaged when the window is logged.

    ``sums`` (good steps counted among them, on the device with the rest) are checkpointed, so a
    resumed run logs the same averages as one that never stopped; ``steps`` and ``started`` only
    time the window, and after a resume its speed counts from the resume.
    """

    sums: dict[str, torch.Tensor]  # loss_<direction>, grad_norm, clipped, good_steps
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def empty(cls, directions: tuple[str, ...], device: torch.device) -> "LogWindow":
        names = (*(f"loss_{d}" for d in directions), "grad_norm", "clipped", "good_steps")
        return cls({name: torch.zeros((), device=device) for name in names})

    def add(self, losses: dict[str, torch.Tensor], grad_norm: torch.Tensor, clip_norm: float,
            good: torch.Tensor | None = None) -> None:
        """Count one good step, on the device: nothing here waits for it. ``good`` (a 0-dim bool
        tensor, the device's own verdict) leaves a bad step out without the host knowing which."""
        values = {f"loss_{d}": loss.detach() for d, loss in losses.items()}
        values.update(grad_norm=grad_norm.detach(), clipped=(grad_norm.detach() > clip_norm).float())
        for name, value in values.items():
            self.sums[name] += value if good is None else torch.where(good, value, 0.0)
        self.sums["good_steps"] += 1 if good is None else good

    @property
    def good_steps(self) -> int:
        """Steps of the window that were not skipped (a read from the device)."""
        return int(self.sums["good_steps"].item())

    def reset(self) -> None:
        for total in self.sums.values():
            total.zero_()
        self.steps, self.started = 0, time.perf_counter()


@dataclass
class TrainState:
    step: int = 0
    tokens_seen: int = 0
    train_time: float = 0.0  # seconds of training, summed over every resume
    best_val_loss: float | None = None
    evals_since_best: int = 0  # for train.patience
    bad_steps: int = 0  # NaN/Inf steps in a row now...
    skipped_steps: int = 0  # ...and in all
    overflow_steps: int = 0  # updates the fp16 loss scale skipped (not faults: the scale adapts)
    carried: dict[str, State | None] = field(default_factory=dict)  # per direction; None: start afresh
    window: LogWindow = field(default_factory=lambda: LogWindow({}))

    @classmethod
    def fresh(cls, directions: tuple[str, ...], device: torch.device) -> "TrainState":
        return cls(carried=dict.fromkeys(directions), window=LogWindow.empty(directions, device))

    def record_eval(self, loss: float) -> bool:
        """Take an evaluation's loss into the best and the patience count; True if it is a new best."""
        improved = self.best_val_loss is None or loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.evals_since_best = loss, 0
        else:
            self.evals_since_best += 1
        return improved

    def reset_carried(self) -> None:
        self.carried = dict.fromkeys(self.carried)

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain numbers and CPU tensors, as a checkpoint stores them (see ``from_checkpoint``)."""
        return {
            "step": self.step, "tokens_seen": self.tokens_seen, "train_time": self.train_time,
            "best_val_loss": self.best_val_loss, "evals_since_best": self.evals_since_best,
            "bad_steps": self.bad_steps, "skipped_steps": self.skipped_steps, "overflow_steps": self.overflow_steps,
            "carried": {direction: None if state is None else [t.detach().float().cpu() for t in state]
                        for direction, state in self.carried.items()},
            "log_window": {"sums": {name: total.item() for name, total in self.window.sums.items()}},
        }

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> "TrainState":
        window = saved["log_window"]
        sums = {"good_steps": window.get("good_steps", 0), **window["sums"]}  # older checkpoints kept the count apart
        return cls(
            step=saved["step"], tokens_seen=saved["tokens_seen"], train_time=saved["train_time"],
            best_val_loss=saved["best_val_loss"], evals_since_best=saved["evals_since_best"],
            bad_steps=saved["bad_steps"], skipped_steps=saved["skipped_steps"],
            overflow_steps=saved.get("overflow_steps", 0),  # absent from checkpoints written before it existed
            carried={direction: None if state is None else tuple(state) for direction, state in saved["carried"].items()},
            window=LogWindow({name: torch.tensor(float(value)) for name, value in sums.items()}),
        )

    def gathered(self, ranks: "Distributed") -> "TrainState":
        """This state as one process would hold it: the carried state of every stream, the window's
        sums averaged over the ranks. A collective: under torchrun every rank must call it."""
        carried = {d: None if state is None else ranks.gather_state(state) for d, state in self.carried.items()}
        sums = {name: ranks.sum(total) / ranks.world for name, total in self.window.sums.items()}
        return dataclasses.replace(self, carried=carried, window=dataclasses.replace(self.window, sums=sums))

    def on_rank(self, directions: tuple[str, ...], rows: slice, device: torch.device) -> "TrainState":
        """A saved state as one rank trains on: its own streams' carried state on its device, and a
        window for ``directions`` that holds the saved sums."""
        carried = {d: None if self.carried.get(d) is None else tuple(t[:, rows].to(device) for t in self.carried[d])
                   for d in directions}
        window = LogWindow.empty(directions, device)
        for name, total in self.window.sums.items():
            if name in window.sums:
                window.sums[name].fill_(total.item())
        return dataclasses.replace(self, carried=carried, window=window)
