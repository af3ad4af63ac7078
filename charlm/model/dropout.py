"""Dropout over sequences: a new mask at every position, or one mask per sequence.

``element`` is torch's dropout: every number of every time step kept or dropped on its own.
``locked`` (variational dropout, Gal and Ghahramani 2016; AWD-LSTM's LockedDropout) draws one mask
per sequence of the batch and applies it at every time step, so a unit that is dropped stays dropped
for the whole window: the noise cannot average out over time, which regularises a model that reads
its text many times more strongly per unit of rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sequence_dropout(x: torch.Tensor, p: float, locked: bool, training: bool, time_dim: int = 1) -> torch.Tensor:
    """``x`` with dropout ``p``: per element, or (``locked``) one mask per sequence, shared along ``time_dim``."""
    if not training or p == 0:
        return x
    if not locked:
        return F.dropout(x, p)
    shape = list(x.shape)
    shape[time_dim] = 1
    mask = x.new_empty(shape).bernoulli_(1 - p).div_(1 - p)
    return x * mask


class SequenceDropout(nn.Module):
    """``sequence_dropout`` as a module, for batch-first (batch, time, features) inputs."""

    def __init__(self, p: float, locked: bool = False):
        super().__init__()
        self.p, self.locked = p, locked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sequence_dropout(x, self.p, self.locked, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, locked={self.locked}"
