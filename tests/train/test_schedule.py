import pytest

from charlm.config import TrainConfig
from charlm.train.schedule import budget_progress, cooling_down, learning_rate, stop_reason


def test_learning_rate_schedules():
    cosine = TrainConfig(lr=1.0, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(cosine, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(cosine, 9, 0.0) == pytest.approx(1.0)
    assert learning_rate(cosine, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(cosine, 100, 1.0) == pytest.approx(0.1)
    step = TrainConfig(lr=1.0, warmup_steps=0, lr_schedule="step", lr_decay_every=100, lr_decay_rate=0.5)
    assert learning_rate(step, 99, 0.0) == 1.0 and learning_rate(step, 250, 0.0) == 0.25
    constant = TrainConfig(lr=0.3, warmup_steps=0, lr_schedule="constant")
    assert learning_rate(constant, 1000, 0.9) == 0.3


def test_budgets_whichever_first():
    config = TrainConfig(max_steps=100, max_epochs=2.0, max_time=60.0)
    assert budget_progress(config, 50, 0.5, 10.0) == 0.5
    assert budget_progress(config, 10, 1.5, 10.0) == 0.75
    assert stop_reason(config, 10, 0.1, 61.0) == "max_time"
    assert stop_reason(config, 100, 0.1, 1.0) == "max_steps"
    assert stop_reason(config, 10, 2.0, 1.0) == "max_epochs"
    assert stop_reason(config, 10, 1.0, 1.0) is None


def test_wsd_holds_the_rate_then_cools_down_as_one_minus_the_square_root():
    wsd = TrainConfig(lr=1.0, warmup_steps=10, lr_schedule="wsd", cooldown=0.2, min_lr_ratio=0.1)
    assert learning_rate(wsd, 0, 0.0) == pytest.approx(0.1)  # the warmup as every schedule's
    assert learning_rate(wsd, 500, 0.5) == learning_rate(wsd, 700, 0.79) == 1.0
    for progress in (0.8, 0.85, 0.9, 0.99, 1.0):
        done = (progress - 0.8) / 0.2
        assert learning_rate(wsd, 900, progress) == pytest.approx(0.1 + 0.9 * (1 - done ** 0.5))
    assert learning_rate(wsd, 900, 0.9, cooling=False) == 1.0  # the trainer has not begun the cool-down yet
    assert cooling_down(wsd, 0.8) and not cooling_down(wsd, 0.79)
    assert not cooling_down(TrainConfig(lr_schedule="cosine"), 0.99)
