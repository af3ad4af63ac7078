"""The loss of a model on a text: nats and bits per predicted character, dropout off.

What an evaluation reads comes from the text's ``Part`` (charlm/data/base.py): a stream's windows with
the state carried from one to the next, or whole lines each from a fresh state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.data.base import Part
from charlm.data.lines import IGNORE
from charlm.model.network import CharRNN
from charlm.runtime import accumulator_dtype, autocast


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
def evaluate(model: CharRNN, part: Part, batch_size: int, device: torch.device, precision: str = "fp32",
             direction: str = "forward") -> EvalResult:
    """Mean loss over every prediction ``part`` holds, in ``direction``'s reading order (the backward
    direction predicts each character from the text after it)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=accumulator_dtype(device), device=device)
    count, state = 0, None
    try:
        for inputs, targets in part.eval_batches(batch_size, direction):
            x = torch.from_numpy(inputs).to(device)
            y = torch.from_numpy(targets).to(device)
            with autocast(device, precision):
                logits, state = model(x, state if part.carries_state else None, direction=direction)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum",
                                     ignore_index=IGNORE).to(total.dtype)
            count += int((targets != IGNORE).sum())
    finally:
        model.train(was_training)
    return EvalResult(loss=total.item() / count if count else float("nan"), chars=count)


def evaluate_directions(model: CharRNN, part: Part, batch_size: int, device: torch.device,
                        precision: str = "fp32") -> dict[str, EvalResult]:
    """The loss of each direction the model has: {"forward": …[, "backward": …]}."""
    return {d: evaluate(model, part, batch_size, device, precision, d) for d in model.directions}
