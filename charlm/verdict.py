"""Each step's NaN/Inf verdict, kept on the device until the loop reads it (``train.nan_check: log``).

Reading whether a step's loss and gradient are finite costs the host a wait for the device every
step: free on a CPU, where nothing runs ahead, but on a GPU it stalls the queue of kernels the
host would otherwise keep full. In ``log`` mode the trainer decides on the device instead (the fused
AdamW skips its whole update where ``found_inf`` is set; the carried state is zeroed where the step
was bad) and counts here what happened; the loop reads the counts every ``log_interval`` steps,
one read for the whole window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Verdicts:
    """What the device-side verdicts of the steps since the last ``read`` came to."""

    skipped: int  # steps with a NaN/Inf loss or gradient (no update)
    overflows: int  # steps whose fp16 loss scale overflowed (no update; not a fault)
    run: int  # bad steps in a row now
    longest_run: int  # the longest run of bad steps in a row since the last read
    last_step: int  # the last bad step, its loss and gradient norm (0 if none)
    last_loss: float
    last_grad_norm: float


class PendingVerdicts:
    """Counters on the device, updated by every step without a sync and read at log intervals."""

    def __init__(self, device: torch.device, run: int = 0):
        # skipped, overflows, bad steps in a row, the longest such run, the last bad step
        self.counts = torch.tensor([0, 0, run, run, 0], dtype=torch.int64, device=device)
        self.last_bad = torch.zeros(2, dtype=torch.float32, device=device)  # its loss and gradient norm

    def add(self, bad: torch.Tensor, overflow: torch.Tensor, step: int, loss: torch.Tensor,
            grad_norm: torch.Tensor) -> None:
        """Count step ``step`` (``bad``, ``overflow``: 0-dim bool tensors) on the device. Python numbers
        go in as kernel arguments, never as a copy to the device."""
        counts, bad_count = self.counts, bad.long()
        run = (counts[2] + bad_count) * bad_count  # a good step ends the run
        counts.copy_(torch.stack([counts[0] + bad_count, counts[1] + overflow.long(), run,
                                  torch.maximum(counts[3], run), torch.where(bad, step, counts[4])]))
        numbers = torch.stack([loss.detach().float(), grad_norm.detach().float()])
        self.last_bad.copy_(torch.where(bad, numbers, self.last_bad))

    def read(self) -> Verdicts:
        """The verdicts since the last read (one wait for the device); the window's counts start again."""
        skipped, overflows, run, longest, step = self.counts.tolist()
        loss, grad_norm = self.last_bad.tolist()
        self.counts.copy_(torch.tensor([0, 0, run, run, 0]))
        self.last_bad.zero_()
        return Verdicts(skipped, overflows, run, longest, step, loss, grad_norm)
