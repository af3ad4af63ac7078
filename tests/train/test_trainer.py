"""The trainer's pieces, each called on its own: no subprocess, no monkeypatched torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.model.network import CharRNN
from charlm.train import session
from charlm.train.averaging import WeightAverage
from charlm.train.loop import should_stop
from charlm.train.report import QuietReport
from tests.train.test_loop import _at_steps, _inf_gradient, _nan_loss, request, small_config


@pytest.fixture
def trainer(tmp_path, text_file):
    """A trainer set up as `charlm train` sets one up, for plain SGD at a constant rate without clipping."""
    config = small_config(**{"train.optimizer": "sgd", "train.momentum": 0.0, "train.lr": 0.5,
                             "train.lr_schedule": "constant", "train.clip_norm": 0.0, "train.max_steps": 50,
                             "train.max_epochs": None, "model.num_layers": 2})
    with session(request(config, text_file, tmp_path / "run")) as trainer:
        yield trainer


@pytest.fixture
def adamw_trainer(tmp_path, text_file):
    config = small_config(**{"train.max_steps": 50, "train.max_epochs": None})
    with session(request(config, text_file, tmp_path / "adamw")) as trainer:
        yield trainer


def _good_steps(trainer) -> int:
    return int(trainer.run.window.sums["good_steps"].item())


def test_a_step_is_plain_truncated_bptt_and_sgd(trainer):
    """Step 1 and 2 against a naive reference: one forward over the window from the carried state,
    mean cross-entropy, w -= lr * grad, and the state carried into the next window."""
    run = trainer.run
    reference = CharRNN.from_config(run.config.model, len(run.data.vocab))
    reference.load_state_dict(run.model.state_dict())
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
        trainer.step(batch)
        assert not trainer.read_verdicts()
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(run.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(run.streams.carried["forward"], state))
    assert run.state.step == 2 and run.state.tokens_seen == 2 * 8 * 16


def test_a_batch_is_a_function_of_the_step(trainer):
    first = trainer.batch()
    assert all(torch.equal(a, b) for a, b in zip(first["forward"], trainer.batch()["forward"]))
    inputs, targets = first["forward"]
    assert inputs.shape == targets.shape == (8, 16)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs one character on
    trainer.step(first)
    assert not torch.equal(trainer.batch()["forward"][0], inputs)
    assert np.array_equal(trainer.batch()["forward"][0].numpy(), trainer.run.batches["forward"].batch(1)[0])


def test_a_skipped_step_leaves_weights_optimizer_and_state_alone(adamw_trainer):
    trainer, run = adamw_trainer, adamw_trainer.run
    for _ in range(3):
        trainer.step(trainer.batch())
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    moments = [v.clone() for state in run.optimizer.state.values() for v in state.values()]
    _at_steps({4}, "forward", _nan_loss)(trainer)
    trainer.step(trainer.batch())
    assert not trainer.read_verdicts()
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())
    after = [v for state in run.optimizer.state.values() for v in state.values()]
    assert len(after) == len(moments) and all(torch.equal(a, b) for a, b in zip(moments, after))  # AdamW's step too
    assert all((t == 0).all() for t in run.streams.carried["forward"])  # the next window starts afresh
    assert (run.state.step, run.state.bad_steps, run.state.skipped_steps, _good_steps(trainer)) == (4, 1, 1, 3)
    trainer.step(trainer.batch())
    assert not trainer.read_verdicts() and run.state.bad_steps == 0


def test_max_bad_steps_in_a_row_is_divergence(trainer):
    trainer.run.config.train.max_bad_steps = 2
    _at_steps({1, 2}, "forward", _nan_loss)(trainer)
    trainer.step(trainer.batch())
    assert not trainer.read_verdicts()
    trainer.step(trainer.batch())
    assert trainer.read_verdicts()
    assert trainer.read_verdicts()  # found once, it stands


def test_evaluate_keeps_the_best_and_writes_best_pt_only_when_it_improves(trainer):
    run = trainer.run.request.out_dir
    first = trainer.evaluate()
    assert first == trainer.run.state.best_val_loss and (run / "best.pt").exists()
    written = (run / "best.pt").stat().st_mtime_ns
    assert trainer.evaluate() == first  # nothing trained in between: the same loss, not a better one
    assert trainer.run.state.evals_since_best == 1 and (run / "best.pt").stat().st_mtime_ns == written


def test_the_checkpoint_holds_every_part_of_the_run_as_it_stands(trainer):
    run = trainer.run
    trainer.step(trainer.batch())
    checkpoint = trainer.checkpoint()
    assert checkpoint.step == 1 and checkpoint.precision == "fp32" and checkpoint.vocab == run.data.vocab
    assert checkpoint.text.sha256 == run.data.sha256 and checkpoint.parts["average"] is None
    assert all(torch.equal(a, b) for a, b in zip(checkpoint.parts["streams"]["forward"], run.streams.carried["forward"]))
    assert checkpoint.parameters == run.model.num_parameters() and set(checkpoint.parts) == set(run.parts())


def test_the_loop_stops_on_a_spent_budget_or_a_request(trainer):
    assert should_stop(trainer, None, False) is None
    assert should_stop(trainer, "SIGINT", False) == "interrupted"
    assert should_stop(trainer, None, True) == "pruned"
    trainer.run.state.step = 50
    assert should_stop(trainer, "SIGINT", False) == "max_steps"  # a spent budget comes first


def test_an_fp16_overflow_skips_the_update_without_counting_it_anywhere(adamw_trainer):
    """With a loss scale, an inf gradient and a finite loss is the scale's overflow: the scaler skips
    the update and lowers the scale; it is not a fault, and none of it reaches the logged window or
    the weight average. (fp16 needs CUDA; an enabled CPU GradScaler behaves the same.)"""
    trainer, run = adamw_trainer, adamw_trainer.run
    run.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**8)
    run.average = WeightAverage(run.model, 0.9)
    trainer.step(trainer.batch())
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    sums = {k: v.clone() for k, v in run.window.sums.items()}
    updates = run.average.updates
    hook = run.model.head.bias.register_hook(lambda grad: grad * float("inf"))
    trainer.step(trainer.batch())
    hook.remove()
    assert not trainer.read_verdicts()
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())
    assert all(torch.equal(sums[k], v) for k, v in run.window.sums.items())
    assert run.average.updates == updates
    state = run.state
    assert (state.step, _good_steps(trainer), state.bad_steps, state.skipped_steps, state.overflow_steps) == (2, 1, 0, 0, 1)
    assert run.scaler.get_scale() == 2.0**7
    assert not all((t == 0).all() for t in run.streams.carried["forward"])  # the forward pass was finite: it carries on
    trainer.step(trainer.batch())
    assert _good_steps(trainer) == 2


def test_a_nan_loss_is_still_a_fault_with_a_loss_scale(adamw_trainer):
    trainer, run = adamw_trainer, adamw_trainer.run
    run.scaler = torch.amp.GradScaler("cpu", enabled=True)
    _at_steps({1}, "forward", _nan_loss)(trainer)
    trainer.step(trainer.batch())
    trainer.read_verdicts()
    assert (run.state.skipped_steps, run.state.overflow_steps) == (1, 0)


def test_gradients_are_unscaled_after_the_all_reduce(adamw_trainer, monkeypatch):
    """Under torchrun every rank must judge the same (averaged) gradients: unscaling first would let
    a rank with finite gradients of its own step on another rank's inf."""
    trainer, run, calls = adamw_trainer, adamw_trainer.run, []
    monkeypatch.setattr(type(run.ranks), "enabled", property(lambda self: True))
    monkeypatch.setattr(run.ranks, "average", lambda grads, loss: calls.append("all-reduce") or loss)
    run.scaler = torch.amp.GradScaler("cpu", enabled=True)
    unscale = run.scaler.unscale_
    monkeypatch.setattr(run.scaler, "unscale_", lambda optimizer: calls.append("unscale") or unscale(optimizer))
    trainer.step(trainer.batch())
    assert calls == ["all-reduce", "unscale"]


def _pair(tmp_path, text_file, **overrides):
    """Two sessions of the same run, one reading the verdicts every step, one at log intervals."""
    config = {"train.max_steps": 50, "train.max_epochs": None, "model.dropout": 0.1, **overrides}
    return [session(request(small_config(**config, **{"train.nan_check": mode}), text_file, tmp_path / mode))
            for mode in ("step", "log")]


@pytest.mark.parametrize("method, fault", [("forward", _nan_loss), ("backward", _inf_gradient)])
def test_reading_the_verdicts_at_log_intervals_gives_the_same_run(tmp_path, text_file, method, fault):
    """train.nan_check log (CUDA's choice) against step: the same weights, AdamW moments, carried state
    and counts through a NaN loss or an inf gradient at steps 4 and 5, with an averaged model too."""
    each_step, at_intervals = _pair(tmp_path, text_file, **{"train.ema_decay": 0.9})
    with each_step as host, at_intervals as device:
        assert (host.verdict_interval, device.verdict_interval) == (1, 10)
        for trainer in (host, device):
            torch.manual_seed(0)  # the same dropout masks
            _at_steps({4, 5}, method, fault)(trainer)
            for step in range(1, 9):
                trainer.step(trainer.batch())
                if step % trainer.verdict_interval == 0:
                    assert not trainer.read_verdicts()
        assert device.run.state.skipped_steps == 0  # not read yet...
        assert not device.read_verdicts()  # ...and two in a row are under max_bad_steps
        a, b = host.run, device.run
        for name, value in a.model.state_dict().items():
            assert torch.equal(b.model.state_dict()[name], value), name
        assert all(torch.equal(x, y) for x, y in zip(a.average.shadow, b.average.shadow))
        assert a.average.updates == b.average.updates == 6
        moments = [[v for state in r.optimizer.state.values() for v in state.values()] for r in (a, b)]
        assert all(torch.equal(x, y) for x, y in zip(*moments))
        assert all(torch.equal(x, y) for x, y in zip(a.streams.carried["forward"], b.streams.carried["forward"]))
        assert a.state == b.state and a.state.skipped_steps == 2
        assert all(torch.equal(a.window.sums[k], v) for k, v in b.window.sums.items())


def test_the_verdict_is_not_read_between_log_intervals(tmp_path, text_file, monkeypatch):
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
        assert not trainer.read_verdicts() and trainer.run.state.skipped_steps == 1


def test_max_bad_steps_in_a_row_read_late_is_divergence_at_the_read(tmp_path, text_file):
    with _pair(tmp_path, text_file, **{"train.max_bad_steps": 2})[1] as trainer:
        _at_steps({2, 3}, "forward", _nan_loss)(trainer)
        for _ in range(4):
            trainer.step(trainer.batch())
        assert trainer.read_verdicts()
        assert (trainer.run.state.bad_steps, trainer.run.state.skipped_steps) == (2, 2)
        assert trainer.read_verdicts()  # found once, it stands though step 4 was good


def test_ranks_agree_on_stopping_at_log_intervals_and_budget_ends_only(trainer, monkeypatch):
    """Under torchrun a collective every step would stall GPUs: the ranks agree every log_interval
    steps (10 here) and where a step budget ends (50), which every rank reaches at the same step."""
    run, agreed = trainer.run, []
    monkeypatch.setattr(type(run.ranks), "enabled", property(lambda self: True))
    monkeypatch.setattr(run.ranks, "agree", lambda code, seconds: agreed.append(run.state.step) or (code, seconds))
    for step in range(51):
        run.state.step = step
        should_stop(trainer, "SIGTERM" if step >= 13 else None, False)
    assert agreed == [0, 10, 20, 30, 40, 50]


def test_every_rank_holds_the_same_evaluation(tmp_path, text_file, monkeypatch):
    """Under torchrun rank 0 evaluates and the others receive its numbers: the forward loss as the
    evaluation's value, the mean of both directions as the objective best.pt and patience follow."""
    config = small_config(**{"model.bidirectional": True, "train.max_steps": 50})
    with session(request(config, text_file, tmp_path / "run")) as trainer:
        trainer.step(trainer.batch())
        sent = []
        broadcast = trainer.run.ranks.broadcast
        monkeypatch.setattr(trainer.run.ranks, "broadcast", lambda value: sent.append(value) or broadcast(value))
        forward = trainer.evaluate()
        objective, best = sent[0], trainer.run.state.best_val_loss
        assert sent == [objective, forward] and objective == best != forward
        received = iter(sent)
        monkeypatch.setattr(type(trainer.run.ranks), "is_main", property(lambda self: False))
        trainer.report = QuietReport(tmp_path / "run")  # what another rank reports with
        monkeypatch.setattr(trainer.run.ranks, "broadcast", lambda value: next(received))
        assert trainer.evaluate() == forward and trainer.last_val == forward  # another rank: rank 0's numbers
        assert trainer.run.state.evals_since_best == 1  # the same objective: no improvement, as on rank 0


def test_activation_penalty_is_the_mean_squares_written_out():
    from charlm.data.lines import IGNORE
    from charlm.model.network import Reading
    from charlm.train.trainer import activation_penalty

    torch.manual_seed(0)
    output, dropped = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    targets = torch.tensor([[1, 2, 3, 4, 5], [1, 2, IGNORE, IGNORE, IGNORE]])  # a padded line
    reading = Reading(torch.zeros(2, 5, 7), (), output, dropped)
    real = [(b, t) for b in range(2) for t in range(5) if targets[b, t] != IGNORE]
    ar = sum(float(dropped[b, t, k]) ** 2 for b, t in real for k in range(3)) / (3 * len(real))
    pairs = [(b, t) for b, t in real if (b, t - 1) in real]
    tar = sum(float(output[b, t, k] - output[b, t - 1, k]) ** 2 for b, t in pairs for k in range(3)) / (3 * len(pairs))
    assert float(activation_penalty(reading, targets, 2.0, 0.0)) == pytest.approx(2.0 * ar, rel=1e-6)
    assert float(activation_penalty(reading, targets, 0.0, 1.5)) == pytest.approx(1.5 * tar, rel=1e-6)
    assert float(activation_penalty(reading, targets, 2.0, 1.5)) == pytest.approx(2.0 * ar + 1.5 * tar, rel=1e-6)


def test_activation_penalties_move_the_weights_but_not_the_logged_loss(tmp_path, text_file):
    from charlm.train import train
    from charlm.train.checkpoint import Checkpoint
    from charlm.train.logs import read_metrics

    weights, losses = {}, {}
    for name, extra in (("plain", {}), ("penalised", {"train.ar": 5.0, "train.tar": 5.0})):
        config = small_config(**{"train.max_steps": 1, "train.max_epochs": None, "train.log_interval": 1, **extra})
        train(config, text_file, tmp_path / name, progress=False)
        weights[name] = Checkpoint.load(tmp_path / name / "last.pt").weights
        losses[name] = [e["loss"] for e in read_metrics(tmp_path / name / "metrics.jsonl") if e["event"] == "train"]
    assert losses["plain"] == losses["penalised"]  # the loss logged is the text's, in nats/char
    assert not torch.equal(weights["plain"]["rnn.weight_hh_l0"], weights["penalised"]["rnn.weight_hh_l0"])
