"""Loss of a model on a token array: nats and bits per character, state carried across windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data import eval_windows
from charlm.model import CharRNN
from charlm.runtime import autocast

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
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state = None
    try:
        for inputs, targets in eval_windows(tokens, batch_size, EVAL_WINDOW):
            x = torch.from_numpy(inputs).to(device)
            y = torch.from_numpy(targets).to(device)
            with autocast(device, precision):
                logits, state = model(x, state, direction=direction)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").double()
            count += y.numel()
    finally:
        model.train(was_training)
    return EvalResult(loss=total.item() / count if count else float("nan"), chars=count)


def evaluate_directions(
    model: CharRNN, tokens: np.ndarray, batch_size: int, device: torch.device, precision: str = "fp32"
) -> dict[str, EvalResult]:
    """``evaluate_tokens`` for each direction the model has: {"forward": …[, "backward": …]}."""
    return {d: evaluate_tokens(model, tokens, batch_size, device, precision, d) for d in model.directions}
