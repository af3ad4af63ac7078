"""Weight averaging: an exponential moving average (EMA) of the weights along training.

SGD's weights jitter around a minimum at whatever scale the learning rate sets; their running
average sits closer to its middle, so it usually evaluates better than the latest weights and
costs one copy of the parameters. With ``train.ema_decay`` set, evaluations, best.pt and last.pt's
published weights and the end-of-training sample use the averaged weights (so ``charlm sample`` and
``charlm eval`` see them); the raw weights the optimizer works on are kept in the checkpoint too,
so a resumed run continues exactly. Without it a run holds a ``NoAverage``, which publishes the
weights as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        # Updates so far, on the device: an update the device alone knows to be void (train.nan_check
        # log) must not count, and reading the count every step would wait for the device.
        self.count = torch.zeros((), dtype=torch.int64, device=self.shadow[0].device)

    @property
    def updates(self) -> int:
        return int(self.count.item())

    def current_decay(self) -> torch.Tensor:
        # Early on the average would be dominated by the random initial weights: ramp the decay up
        # (as TensorFlow's ExponentialMovingAverage does with num_updates).
        count = self.count.float()
        return torch.clamp((1 + count) / (10 + count), max=self.decay)

    @torch.no_grad()
    def update(self, good: torch.Tensor | None = None) -> None:
        """Fold the current weights into the average (after each optimizer step); where ``good`` (a
        0-dim bool tensor) is false, leave the average and its count as they were."""
        weight = 1.0 - self.current_decay()
        if good is not None:
            weight = weight * good
        self.count += 1 if good is None else good.long()
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], [weight] * len(self.shadow))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; the raw ones come back after."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, raw)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights (as the model's state dict) and how many updates made them."""
        with self.applied():
            weights = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        return {"model": weights, "updates": self.updates}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        with self.applied():
            self.model.load_state_dict(saved["model"])
            with torch.no_grad():
                torch._foreach_copy_(self.shadow, [p.detach() for p in self.params])
        self.count.fill_(saved["updates"])


class NoAverage:
    """A run without weight averaging: the model's own weights are the published ones."""

    def update(self, good: torch.Tensor | None = None) -> None:
        pass

    def applied(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, saved: None) -> None:
        pass


def weight_average(model: nn.Module, decay: float) -> WeightAverage | NoAverage:
    """The average ``train.ema_decay`` asks for (0: none)."""
    return WeightAverage(model, decay) if decay > 0 else NoAverage()
