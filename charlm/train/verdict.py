"""Each step's NaN/Inf verdict: judged on the device, counted there, read by the host when asked.

A step whose loss or gradient is not finite must not reach the weights. The verdict is computed on
the device (``judge``), the update skips itself there (``runtime.step_unless``), the carried state,
the log window and the weight average leave the step out, and ``PendingVerdicts`` counts what
happened. The host reads the counts every step (``train.nan_check: step``: free on a CPU, where
nothing runs ahead) or every ``log_interval`` steps (``log``: a GPU's, where a read would stall the
queue of kernels); ``settle`` folds them into the run's counters with the one divergence rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from charlm.train.state import TrainState


@dataclass
class Verdict:
    """One step, as 0-dim bool tensors on the device."""

    good: torch.Tensor  # finite loss and gradients: the update happens
    bad: torch.Tensor  # a NaN or Inf fault: no update, and the carried state starts afresh
    overflow: torch.Tensor  # the fp16 loss scale overflowed: no update, a lower scale next time (no fault)


def judge(loss: torch.Tensor, grad_norm: torch.Tensor, scaled: bool) -> Verdict:
    """The verdict on a step's loss and (unscaled) gradient norm; with a loss scale an inf gradient
    under a finite loss is the scale's overflow, not a fault."""
    finite_loss, finite_grads = torch.isfinite(loss.detach()), torch.isfinite(grad_norm.detach())
    good = finite_loss & finite_grads
    bad = ~finite_loss if scaled else ~good
    return Verdict(good, bad, ~good & ~bad)


@dataclass
class Verdicts:
    """What the verdicts of the steps since the last ``read`` came to."""

    skipped: int  # steps with a NaN/Inf loss or gradient (no update)
    overflows: int  # steps whose fp16 loss scale overflowed (no update; not a fault)
    run: int  # bad steps in a row now
    longest_run: int  # the longest run of bad steps in a row since the last read
    last_step: int  # the last bad step, its loss and gradient norm (0 if none)
    last_loss: float
    last_grad_norm: float


class PendingVerdicts:
    """Counters on the device, updated by every step without a sync and read when the loop asks."""

    def __init__(self, device: torch.device, run: int = 0):
        # skipped, overflows, bad steps in a row, the longest such run, the last bad step
        self.counts = torch.tensor([0, 0, run, run, 0], dtype=torch.int64, device=device)
        self.last_bad = torch.zeros(2, dtype=torch.float32, device=device)  # its loss and gradient norm
        self._kept = torch.tensor([0, 0, 1, 0, 0], dtype=torch.int64, device=device)  # what a read keeps: the run

    def add(self, verdict: Verdict, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Count step ``step`` on the device. Python numbers go in as kernel arguments, never as a
        copy to the device."""
        counts, bad, bad_count = self.counts, verdict.bad, verdict.bad.long()
        run = (counts[2] + bad_count) * bad_count  # a good step ends the run
        counts.copy_(torch.stack([counts[0] + bad_count, counts[1] + verdict.overflow.long(), run,
                                  torch.maximum(counts[3], run), torch.where(bad, step, counts[4])]))
        numbers = torch.stack([loss.detach().float(), grad_norm.detach().float()])
        self.last_bad.copy_(torch.where(bad, numbers, self.last_bad))

    def read(self) -> Verdicts:
        """The verdicts since the last read (one wait for the device); the counts start again."""
        skipped, overflows, run, longest, step = self.counts.tolist()
        loss, grad_norm = self.last_bad.tolist() if skipped else (0.0, 0.0)
        # Started again on the device, the run of bad steps going on (a copy from the host would wait too).
        self.counts.mul_(self._kept)
        self.counts[3].copy_(self.counts[2])
        if skipped:
            self.last_bad.zero_()
        return Verdicts(skipped, overflows, run, longest, step, loss, grad_norm)


def settle(state: "TrainState", verdicts: Verdicts, limit: int) -> bool:
    """Fold ``verdicts`` into the run's counters; True once ``limit`` bad steps came in a row (the
    divergence the loop stops for, which then stands: later reads do not undo it)."""
    state.skipped_steps += verdicts.skipped
    state.overflow_steps += verdicts.overflows
    reached = max(verdicts.longest_run, state.bad_steps if state.bad_steps >= limit else 0)
    state.bad_steps = reached if reached >= limit else verdicts.run
    return state.bad_steps >= limit
