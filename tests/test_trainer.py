"""The trainer's pieces, each called on its own: no subprocess, no monkeypatched torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.model import CharRNN
from charlm.train import session
from charlm.trainer import Outcome, TrainRequest
from test_train import _at_steps, _inf_gradient, _nan_loss, small_config


@pytest.fixture
def trainer(tmp_path, text_file):
    """A trainer set up as `charlm train` sets one up, for plain SGD at a constant rate without clipping."""
    config = small_config(**{"train.optimizer": "sgd", "train.momentum": 0.0, "train.lr": 0.5,
                             "train.lr_schedule": "constant", "train.clip_norm": 0.0, "train.max_steps": 50,
                             "train.max_epochs": None, "model.num_layers": 2})
    with session(TrainRequest(config, text_file, tmp_path / "run", progress=False)) as trainer:
        yield trainer


@pytest.fixture
def adamw_trainer(tmp_path, text_file):
    config = small_config(**{"train.max_steps": 50, "train.max_epochs": None})
    with session(TrainRequest(config, text_file, tmp_path / "adamw", progress=False)) as trainer:
        yield trainer


def test_a_step_is_plain_truncated_bptt_and_sgd(trainer):
    """Step 1 and 2 against a naive reference: one forward over the window from the carried state,
    mean cross-entropy, w -= lr * grad, and the state carried into the next window."""
    reference = CharRNN.from_config(trainer.config.model, len(trainer.data.vocab))
    reference.load_state_dict(trainer.model.state_dict())
    state = None
    for _ in range(2):
        batch = trainer.batch()
        inputs, targets = batch["forward"]
        logits, new_state = reference(inputs, state)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        reference.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.5 * p.grad
        state = tuple(t.detach() for t in new_state)
        assert trainer.step(batch) is Outcome.GOOD
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(trainer.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(trainer.state.carried["forward"], state))
    assert trainer.state.step == 2 and trainer.state.tokens_seen == 2 * 8 * 16


def test_a_batch_is_a_function_of_the_step(trainer):
    first = trainer.batch()
    assert all(torch.equal(a, b) for a, b in zip(first["forward"], trainer.batch()["forward"]))
    inputs, targets = first["forward"]
    assert inputs.shape == targets.shape == (8, 16)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs one character on
    trainer.step(first)
    assert not torch.equal(trainer.batch()["forward"][0], inputs)
    stream = trainer.streams["forward"]
    assert np.array_equal(trainer.batch()["forward"][0].numpy(), stream.batch(1)[0])


def test_a_skipped_step_leaves_weights_optimizer_and_state_alone(adamw_trainer):
    trainer = adamw_trainer
    for _ in range(3):
        assert trainer.step(trainer.batch()) is Outcome.GOOD
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = [v.clone() for state in trainer.optimizer.state.values() for v in state.values()]
    _at_steps({4}, "forward", _nan_loss)(trainer)
    assert trainer.step(trainer.batch()) is Outcome.SKIPPED
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())
    after = [v for state in trainer.optimizer.state.values() for v in state.values()]
    assert len(after) == len(moments) and all(torch.equal(a, b) for a, b in zip(moments, after))  # AdamW's step too
    assert trainer.state.carried == {"forward": None}  # the next window starts afresh
    assert (trainer.state.step, trainer.state.bad_steps, trainer.state.window.good_steps) == (4, 1, 3)
    assert trainer.step(trainer.batch()) is Outcome.GOOD and trainer.state.bad_steps == 0


def test_max_bad_steps_in_a_row_is_divergence(trainer):
    trainer.cfg.max_bad_steps = 2
    _at_steps({1, 2}, "forward", _nan_loss)(trainer)
    assert trainer.step(trainer.batch()) is Outcome.SKIPPED
    assert trainer.step(trainer.batch()) is Outcome.DIVERGED


def test_evaluate_keeps_the_best_and_writes_best_pt_only_when_it_improves(trainer):
    run = trainer.request.out_dir
    first = trainer.evaluate()
    assert first == trainer.state.best_val_loss and (run / "best.pt").exists()
    written = (run / "best.pt").stat().st_mtime_ns
    assert trainer.evaluate() == first  # nothing trained in between: the same loss, not a better one
    assert trainer.state.evals_since_best == 1 and (run / "best.pt").stat().st_mtime_ns == written


def test_the_checkpoint_holds_the_trainer_as_it_stands(trainer):
    trainer.step(trainer.batch())
    checkpoint = trainer.checkpoint()
    assert checkpoint.step == 1 and checkpoint.precision == "fp32" and checkpoint.vocab == trainer.data.vocab
    assert checkpoint.text.sha256 == trainer.data.sha256 and checkpoint.raw_model is None
    assert all(torch.equal(a, b) for a, b in zip(checkpoint.state.carried["forward"], trainer.state.carried["forward"]))
    assert checkpoint.parameters == trainer.model.num_parameters()


def test_the_loop_stops_on_a_spent_budget_or_a_request(trainer):
    assert trainer.should_stop(None) is None
    assert trainer.should_stop("SIGINT") == "interrupted"
    trainer.state.step = 50
    assert trainer.should_stop("SIGINT") == "max_steps"  # a spent budget comes first


def test_ten_epochs_is_the_budget_only_when_no_other_is_given(tmp_path):
    from charlm.config import build_config

    def epochs(*overrides):
        return TrainRequest(build_config(None, list(overrides)), tmp_path / "t.txt", tmp_path / "run").config.train.max_epochs

    assert epochs() == 10.0
    assert epochs(("train.max_time", "10m")) is None  # --max-time 10m means ten minutes
    assert epochs(("train.max_steps", 500)) is None
    assert epochs(("train.max_time", "10m"), ("train.max_epochs", 3)) == 3.0  # given, it counts too


def test_an_fp16_overflow_skips_the_update_without_counting_it_anywhere(adamw_trainer):
    """With a loss scale, an inf gradient and a finite loss is the scale's overflow: the scaler skips
    the update and lowers the scale; it is not a fault, and none of it reaches the logged window or
    the weight average. (fp16 needs CUDA; an enabled CPU GradScaler behaves the same.)"""
    from charlm.averaging import WeightAverage

    trainer = adamw_trainer
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**8)
    trainer.average = WeightAverage(trainer.model, 0.9)
    assert trainer.step(trainer.batch()) is Outcome.GOOD
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    sums = {k: v.clone() for k, v in trainer.state.window.sums.items()}
    updates = trainer.average.updates
    hook = trainer.model.head.bias.register_hook(lambda grad: grad * float("inf"))
    assert trainer.step(trainer.batch()) is Outcome.OVERFLOW
    hook.remove()
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(sums[k], v) for k, v in trainer.state.window.sums.items())
    assert trainer.average.updates == updates
    state = trainer.state
    assert (state.step, state.window.good_steps, state.bad_steps, state.skipped_steps, state.overflow_steps) == (2, 1, 0, 0, 1)
    assert trainer.scaler.get_scale() == 2.0**7
    assert trainer.state.carried["forward"] is not None  # the forward pass was finite: its state carries on
    assert trainer.step(trainer.batch()) is Outcome.GOOD and trainer.state.window.good_steps == 2


def test_a_nan_loss_is_still_a_fault_with_a_loss_scale(adamw_trainer):
    trainer = adamw_trainer
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    _at_steps({1}, "forward", _nan_loss)(trainer)
    assert trainer.step(trainer.batch()) is Outcome.SKIPPED
    assert (trainer.state.skipped_steps, trainer.state.overflow_steps) == (1, 0)


def test_gradients_are_unscaled_after_the_all_reduce(adamw_trainer, monkeypatch):
    """Under torchrun every rank must judge the same (averaged) gradients: unscaling first would let
    a rank with finite gradients of its own step on another rank's inf."""
    trainer, calls = adamw_trainer, []
    monkeypatch.setattr(type(trainer.ranks), "enabled", property(lambda self: True))
    monkeypatch.setattr(trainer.ranks, "average", lambda grads, loss: calls.append("all-reduce") or loss)
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)
    unscale = trainer.scaler.unscale_
    monkeypatch.setattr(trainer.scaler, "unscale_", lambda optimizer: calls.append("unscale") or unscale(optimizer))
    trainer.step(trainer.batch())
    assert calls == ["all-reduce", "unscale"]


def _pair(tmp_path, text_file, **overrides):
    """Two sessions of the same run, one judging each step on the host, one on the device."""
    config = {"train.max_steps": 50, "train.max_epochs": None, "model.dropout": 0.1, **overrides}
    return [session(TrainRequest(small_config(**config, **{"train.nan_check": mode}), text_file,
                                 tmp_path / mode, progress=False)) for mode in ("step", "log")]


@pytest.mark.parametrize("method, fault", [("forward", _nan_loss), ("backward", _inf_gradient)])
def test_the_verdict_kept_on_the_device_gives_the_same_run(tmp_path, text_file, method, fault):
    """train.nan_check log (CUDA's choice) against step: the same weights, AdamW moments, carried state
    and counts through a NaN loss or an inf gradient at steps 4 and 5, with an averaged model too."""
    host_session, device_session = _pair(tmp_path, text_file, **{"train.ema_decay": 0.9})
    with host_session as host, device_session as device:
        assert device.pending is not None and host.pending is None
        for trainer in (host, device):
            torch.manual_seed(0)  # the same dropout masks
            _at_steps({4, 5}, method, fault)(trainer)
            outcomes = [trainer.step(trainer.batch()) for _ in range(8)]
        assert outcomes == [Outcome.GOOD] * 8  # the device's steps look good until settled...
        assert device.settle() is Outcome.GOOD  # ...and two in a row are under max_bad_steps
        for name, value in host.model.state_dict().items():
            assert torch.equal(device.model.state_dict()[name], value), name
        assert all(torch.equal(a, b) for a, b in zip(host.average.shadow, device.average.shadow))
        assert host.average.updates == device.average.updates == 6
        moments = [[v for state in t.optimizer.state.values() for v in state.values()] for t in (host, device)]
        assert all(torch.equal(a, b) for a, b in zip(*moments))
        assert all(torch.equal(a, b) for a, b in zip(host.state.carried["forward"], device.state.carried["forward"]))
        for name in ("skipped_steps", "bad_steps", "overflow_steps"):
            assert getattr(host.state, name) == getattr(device.state, name), name
        assert host.state.skipped_steps == 2
        assert all(torch.equal(host.state.window.sums[k], v) for k, v in device.state.window.sums.items())


def test_the_device_verdict_is_not_read_between_log_intervals(tmp_path, text_file, monkeypatch):
    """No value crosses from the device to the host during a step (on a GPU each would be a sync;
    tests/test_gpu.py counts the syncs themselves)."""
    with _pair(tmp_path, text_file)[1] as trainer:
        reads = []
        for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a))
        _at_steps({2}, "forward", _nan_loss)(trainer)
        for _ in range(4):
            trainer.step(trainer.batch())
        assert reads == []
        monkeypatch.undo()
        assert trainer.settle() is Outcome.GOOD and trainer.state.skipped_steps == 1


def test_max_bad_steps_in_a_row_on_the_device_is_divergence_at_the_next_read(tmp_path, text_file):
    with _pair(tmp_path, text_file, **{"train.max_bad_steps": 2})[1] as trainer:
        _at_steps({2, 3}, "forward", _nan_loss)(trainer)
        assert [trainer.step(trainer.batch()) for _ in range(4)] == [Outcome.GOOD] * 4
        assert trainer.settle() is Outcome.DIVERGED
        assert (trainer.state.bad_steps, trainer.state.skipped_steps) == (2, 2)
        assert trainer.settle() is Outcome.DIVERGED  # found once, it stands though step 4 was good


def test_ranks_agree_on_stopping_at_log_intervals_and_budget_ends_only(trainer, monkeypatch):
    """Under torchrun a collective every step would stall GPUs: the ranks agree every log_interval
    steps (10 here) and where a step budget ends (50), which every rank reaches at the same step."""
    agreed = []
    monkeypatch.setattr(type(trainer.ranks), "enabled", property(lambda self: True))
    monkeypatch.setattr(trainer.ranks, "agree", lambda code, seconds: agreed.append(trainer.state.step) or (code, seconds))
    for step in range(51):
        trainer.state.step = step
        trainer.should_stop("SIGTERM" if step >= 13 else None)
    assert agreed == [0, 10, 20, 30, 40, 50]
