"""Where a training run stands: the parts of it that change from step to step and come back on resume.

Each part saves itself with ``state_dict`` and comes back with ``load_state_dict``, as torch's
modules and optimizers do; ``Run.parts`` (charlm/train/setup.py) lists them all, and a checkpoint holds
one entry per part. Under torchrun the parts that differ between ranks gather every rank's share
when saved (a collective: every rank calls it) and take their own share back when restored, so a
run resumes under torchrun or in one process alike.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from charlm.model.network import State

if TYPE_CHECKING:
    from charlm.train.distributed import Distributed



@dataclass
class TrainState:
    """The run's counters: how far it is, its clock, its best evaluation and its NaN/Inf tally."""

    step: int = 0
    tokens_seen: int = 0
    train_time: float = 0.0  # seconds of training, summed over every resume
    best_val_loss: float | None = None
    evals_since_best: int = 0  # for train.patience
    bad_steps: int = 0  # NaN/Inf steps in a row now...
    skipped_steps: int = 0  # ...and in all
    overflow_steps: int = 0  # updates the fp16 loss scale skipped (not faults: the scale adapts)

    def record_eval(self, loss: float) -> bool:
        """Take an evaluation's loss into the best and the patience count; True if it is a new best."""
        improved = self.best_val_loss is None or loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.evals_since_best = loss, 0
        else:
            self.evals_since_best += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for item in fields(self):
            setattr(self, item.name, saved[item.name])


class Streams:
    """The recurrent state each direction carries from one window of its streams to the next
    (truncated BPTT); None where it starts afresh. This rank holds its own ``rows`` of the streams."""

    def __init__(self, directions: tuple[str, ...], ranks: "Distributed", rows: slice, device: torch.device):
        self.carried: dict[str, State | None] = dict.fromkeys(directions)
        self.ranks, self.rows, self.device = ranks, rows, device

    def reset(self) -> None:
        self.carried = dict.fromkeys(self.carried)

    def carry(self, bad: torch.Tensor) -> None:
        """Keep each state for the next window, cut from this one's graph; where ``bad`` (a 0-dim bool
        tensor, the device's verdict on the step), zeros instead: a state that met a NaN would poison
        every later window, and zeros are what a fresh state is."""
        self.carried = {d: None if state is None else tuple(torch.where(bad, 0.0, t.detach()) for t in state)
                        for d, state in self.carried.items()}

    def state_dict(self) -> dict[str, list[torch.Tensor] | None]:
        """Every rank's streams, in stream order, as float32 CPU tensors (layers, streams, hidden)."""
        return {d: None if state is None else [t.detach().float().cpu() for t in self.ranks.gather_state(state)]
                for d, state in self.carried.items()}

    def load_state_dict(self, saved: dict[str, list[torch.Tensor] | None]) -> None:
        """This rank's streams of a saved state, on its device."""
        self.carried = {d: None if saved.get(d) is None else tuple(t[:, self.rows].to(self.device) for t in saved[d])
                        for d in self.carried}


class LogWindow:
    """Sums over the steps since the last ``train`` event, averaged when the window is logged.

    ``sums`` (good steps counted among them) stay on the device and are saved, so a resumed run logs
    the same averages as one that never stopped; ``steps`` and ``started`` only time the window,
    and after a resume its speed counts from the resume.
    """

    def __init__(self, directions: tuple[str, ...], device: torch.device, ranks: "Distributed"):
        names = (*(f"loss_{d}" for d in directions), "grad_norm", "clipped", "good_steps")
        self.sums = {name: torch.zeros((), device=device) for name in names}
        self.ranks = ranks
        self.steps, self.started = 0, time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor], grad_norm: torch.Tensor, clip_norm: float,
            good: torch.Tensor) -> None:
        """Count one step where ``good`` (a 0-dim bool tensor, the device's verdict) says it was
        finite, without the host knowing which: nothing here waits for the device."""
        values = {f"loss_{d}": loss.detach() for d, loss in losses.items()}
        values.update(grad_norm=grad_norm.detach(), clipped=(grad_norm.detach() > clip_norm).float())
        for name, value in values.items():
            self.sums[name] += torch.where(good, value, 0.0)
        self.sums["good_steps"] += good

    def totals(self) -> dict[str, float]:
        """The sums, averaged over the ranks (one read from the device; a collective under torchrun)."""
        stacked = self.ranks.sum(torch.stack(list(self.sums.values()))) / self.ranks.world
        return dict(zip(self.sums, stacked.tolist()))

    def reset(self) -> None:
        for total in self.sums.values():
            total.zero_()
        self.steps, self.started = 0, time.perf_counter()

    def state_dict(self) -> dict[str, float]:
        return {name: (self.ranks.sum(total) / self.ranks.world).item() for name, total in self.sums.items()}

    def load_state_dict(self, saved: dict[str, float]) -> None:
        for name, total in self.sums.items():
            if name in saved:
                total.fill_(saved[name])


class RandomState:
    """torch's random state (and CUDA's), of every rank: dropout masks go on where they stopped."""

    def __init__(self, ranks: "Distributed"):
        self.ranks = ranks

    def state_dict(self) -> list[dict[str, Any]]:
        states: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return self.ranks.gather_objects(states)

    def load_state_dict(self, saved: list[dict[str, Any]]) -> None:
        """This rank's state; a run saved with another number of processes gives each rank rank 0's."""
        states = saved[self.ranks.rank] if len(saved) == self.ranks.world else saved[0]
        torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            try:
                torch.cuda.set_rng_state_all(states["cuda"])
            except RuntimeError:  # a different number of GPUs than at save time
                import sys

                print("warning: could not restore the CUDA random state (different GPUs)", file=sys.stderr)
