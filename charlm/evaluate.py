"""Loss of a model on a token array: nats and bits per character, state carried across windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data import eval_windows
from charlm.lines import IGNORE, Lines, line_batches
from charlm.model import CharRNN
from charlm.runtime import accumulator_dtype, autocast

EVAL_WINDOW = 512  # forward-only, so long windows: fewer kernel calls, same carried-state result


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy in nats per predicted character
    chars: int  # characters predicted

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    def as_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity, "chars": self.chars}


@torch.no_grad()
def evaluate_tokens(
    model: CharRNN,
    tokens: np.ndarray,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    direction: str = "forward",
) -> EvalResult:
    """Mean loss over every next-character prediction in ``tokens`` (dropout off).

    For ``direction="backward"`` the tokens are read right to left: each character is predicted
    from the text after it, with the state carried from the end of the text towards its start.
    """
    if direction == "backward":
        tokens = tokens[::-1]
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=accumulator_dtype(device), device=device)
    count = 0
    state = None
    try:
        for inputs, targets in eval_windows(tokens, batch_size, EVAL_WINDOW):
            x = torch.from_numpy(inputs).to(device)
            y = torch.from_numpy(targets).to(device)
            with autocast(device, precision):
                logits, state = model(x, state, direction=direction)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").to(total.dtype)
            count += y.numel()
    finally:
        model.train(was_training)
    return EvalResult(loss=total.item() / count if count else float("nan"), chars=count)


@torch.no_grad()
def evaluate_lines(
    model: CharRNN,
    lines: Lines,
    batch_size: int,
    marker: int,
    device: torch.device,
    precision: str = "fp32",
    direction: str = "forward",
) -> EvalResult:
    """Mean loss per predicted character over whole lines, the end marker included (lines mode)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=accumulator_dtype(device), device=device)
    count = 0
    try:
        for inputs, targets in line_batches(lines, batch_size, marker, reverse=direction == "backward"):
            x = torch.from_numpy(inputs).to(device)
            y = torch.from_numpy(targets).to(device)
            with autocast(device, precision):
                logits, _ = model(x, direction=direction)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum",
                                     ignore_index=IGNORE).to(total.dtype)
            count += int((targets != IGNORE).sum())
    finally:
        model.train(was_training)
    return EvalResult(loss=total.item() / count if count else float("nan"), chars=count)


def evaluate_directions(
    model: CharRNN, data: "np.ndarray | Lines", batch_size: int, device: torch.device, precision: str = "fp32",
    marker: int | None = None,
) -> dict[str, EvalResult]:
    """The loss of each direction the model has, {"forward": …[, "backward": …]}, on a token
    stream or (lines mode) on whole lines."""
    if isinstance(data, Lines):
        return {d: evaluate_lines(model, data, batch_size, marker, device, precision, d) for d in model.directions}
    return {d: evaluate_tokens(model, data, batch_size, device, precision, d) for d in model.directions}
