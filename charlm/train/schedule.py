"""How much of its budget a run has used, when it must stop, and the learning rate that follows.

A run's budgets are ``train.max_steps``, ``max_epochs`` and ``max_time``; whichever comes first
stops it, and the cosine schedule runs over the same share, so a 60-second run and a 10-minute run
each end at a low rate. The wsd schedule (warmup, stable, decay; Hägele et al. 2024) holds the rate
until the last ``train.cooldown`` share of the budget and only then lowers it, so a run given a
longer budget can go on from where its cool-down began (``charlm.train.setup``'s extension).
"""

from __future__ import annotations

import math

from charlm.config import TrainConfig


def learning_rate(config: TrainConfig, step: int, progress: float, cooling: bool = True) -> float:
    """Learning rate at ``step``; ``progress`` in [0, 1] is the share of the budget used; ``cooling``:
    whether a wsd run has begun its cool-down (the trainer says when, see ``cooling_down``)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    ratio = config.min_lr_ratio
    if config.lr_schedule == "cosine":
        return config.lr * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
    if config.lr_schedule == "wsd":
        if not (cooling and cooling_down(config, progress)):
            return config.lr
        done = min((progress - (1 - config.cooldown)) / config.cooldown, 1.0)
        return config.lr * (ratio + (1 - ratio) * (1 - math.sqrt(done)))  # the "1 - sqrt" cool-down
    if config.lr_schedule == "step":
        return config.lr * config.lr_decay_rate ** (step // config.lr_decay_every)
    return config.lr


def cooling_down(config: TrainConfig, progress: float) -> bool:
    """Whether a wsd run at ``progress`` is in its cool-down."""
    return config.lr_schedule == "wsd" and progress >= 1 - config.cooldown


def budget_progress(config: TrainConfig, step: int, epochs: float, seconds: float) -> float:
    """Share of the training budget used: the largest share of whichever limits are set."""
    shares = [0.0]
    if config.max_steps:
        shares.append(step / config.max_steps)
    if config.max_epochs:
        shares.append(epochs / config.max_epochs)
    if config.max_time:
        shares.append(seconds / config.max_time)
    return max(shares)


def stop_reason(config: TrainConfig, step: int, epochs: float, seconds: float) -> str | None:
    """The budget that is spent ("max_steps", "max_epochs" or "max_time"), or None."""
    if config.max_steps is not None and step >= config.max_steps:
        return "max_steps"
    if config.max_epochs is not None and epochs >= config.max_epochs:
        return "max_epochs"
    if config.max_time is not None and seconds >= config.max_time:
        return "max_time"
    return None
