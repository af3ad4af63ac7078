import math

import pytest
import torch

from charlm.config import build_config
from charlm.errors import CharlmError
from charlm.model.network import CharRNN
from charlm.train import fit, session, train
from charlm.train.checkpoint import Checkpoint
from charlm.train.logs import read_metrics


def small_config(**overrides):
    base = {
        "model.size": "fixed", "model.hidden_size": 32, "model.num_layers": 1, "train.batch_size": 8, "train.seq_len": 16,
        "train.eval_interval": 50, "train.log_interval": 10, "train.sample_length": 20,
        "train.warmup_steps": 0, "train.threads": 1, "train.precision": "fp32", "train.device": "cpu",
    }
    base.update(overrides)
    return build_config(None, list(base.items()))


def test_learns_a_periodic_text_to_near_zero_loss(tmp_path):
    path = tmp_path / "periodic.txt"
    path.write_text("abcdefghij" * 600)
    config = small_config(**{"train.lr": 1e-2, "train.max_steps": 200, "train.max_epochs": None})
    result = train(config, path, tmp_path / "run", progress=False)
    assert result.step == 200
    assert result.last_val_loss < 0.05
    losses = [e["loss"] for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train"]
    assert losses[0] > 1.0 and losses[-1] < 0.05


def _initial_weights(config, vocab_size):
    torch.manual_seed(config.train.seed)
    return CharRNN.from_config(config.model, vocab_size).state_dict()


@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clipping_really_clips(tmp_path, text_file, mode):
    clip = {"train.clip_norm": 0.001, "train.clip_value": 0.0} if mode == "norm" else \
        {"train.clip_norm": 0.0, "train.clip_value": 1e-4}
    config = small_config(**{"train.optimizer": "sgd", "train.momentum": 0.0, "train.lr": 1.0,
                             "train.max_steps": 1, "train.log_interval": 1, "train.lr_schedule": "constant",
                             **clip})
    result = train(config, text_file, tmp_path / "run", progress=False)
    checkpoint = Checkpoint.load(tmp_path / "run" / "last.pt")
    before = _initial_weights(config, len(checkpoint.vocab))
    deltas = torch.cat([(checkpoint.weights[k] - before[k]).flatten() for k in before])
    event = next(e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train")
    if mode == "norm":
        assert event["grad_norm"] > 0.1  # the raw gradient is far larger than the clip...
        assert event["clip_share"] == 1.0
        assert deltas.norm().item() == pytest.approx(0.001, rel=1e-2)  # ...the step is not
    else:
        assert deltas.abs().max().item() <= 1e-4 + 1e-6  # float32 rounding of weights near 1
        assert (deltas.abs() > 0.99e-4).sum() > 10
    assert result.step == 1


def test_run_directory_contents_and_checkpoint(tmp_path, text_file):
    config = small_config(**{"train.max_steps": 60, "train.checkpoint_interval": 25})
    result = train(config, text_file, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "tensorboard", "last.pt", "best.pt"}
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    plain = torch.load(run / "last.pt", weights_only=True)  # a plain dict of tensors and primitives
    assert set(plain) == {"format", "format_version", "charlm_version", "config", "vocab", "parameters", "precision",
                          "data", "model", "average", "optimizer", "scaler", "state", "streams", "log_window", "rng"}
    model = CharRNN.from_config(Checkpoint.load(run / "last.pt").config.model, len(plain["vocab"]))
    model.load_state_dict(plain["model"])  # the weights need nothing but torch
    checkpoint = Checkpoint.load(run / "last.pt")
    assert checkpoint.step == 60 and checkpoint.state.tokens_seen == 60 * 8 * 16
    assert checkpoint.state.best_val_loss == pytest.approx(result.best_val_loss)
    assert checkpoint.parts["streams"]["forward"][0].shape == (1, 8, 32)  # (layers, streams, hidden)
    events = read_metrics(run / "metrics.jsonl")
    assert [e["step"] for e in events if e["event"] == "eval"] == [50, 60]
    assert math.isfinite(events[-1]["best_val_loss"])


def test_existing_run_is_not_overwritten(tmp_path, text_file):
    config = small_config(**{"train.max_steps": 5})
    train(config, text_file, tmp_path / "run", progress=False)
    from charlm.errors import CharlmError

    with pytest.raises(CharlmError, match="--resume"):
        train(config, text_file, tmp_path / "run", progress=False)


LOCKED = {"model.dropout_mask": "locked", "model.embedding_dropout": 0.1, "train.ar": 2.0, "train.tar": 1.0}


@pytest.mark.parametrize("cell, block, conv, extra", [
    ("lstm", "plain", 1, {}), ("gru", "plain", 1, {}), ("minlstm", "plain", 1, {}), ("mingru", "residual", 1, {}),
    ("minlstm", "residual", 2, {}), ("lstm", "plain", 1, {**LOCKED, "model.weight_dropout": 0.3}),
    ("mingru", "plain", 1, LOCKED), ("lstm", "plain", 1, {"train.lr_schedule": "wsd", "train.cooldown": 0.25})])
def test_pause_and_resume_gives_the_same_run_bit_for_bit(tmp_path, text_file, cell, block, conv, extra):
    # Cosine schedule, warmup, dropout, two layers, a log window cut in half by the pause: all of it
    # has to come back from the checkpoint for the two runs to agree exactly.
    overrides = {"train.max_steps": 40, "train.max_epochs": None, "model.dropout": 0.2, "model.cell": cell,
                 "model.block": block, "model.ffn": 2 if block == "residual" else 0, "model.input_conv": conv,
                 "train.warmup_steps": 5, "model.num_layers": 2, "train.eval_interval": 10,
                 "train.log_interval": 6, "train.checkpoint_interval": 1000, **extra}
    train(small_config(**overrides), text_file, tmp_path / "whole", progress=False)

    # Pause at step 20 as Ctrl-C would: the signal arrives while step 20 computes its loss.
    import os
    import signal

    def interrupt(trainer, losses):
        os.kill(os.getpid(), signal.SIGINT)
        return losses

    paused = _train_poisoned(small_config(**overrides), text_file, tmp_path / "split", _at_steps({20}, "forward", interrupt))
    assert (paused.stop_reason, paused.step) == ("interrupted", 20)
    train(small_config(**overrides), text_file, tmp_path / "split", resume=True, progress=False)

    whole = Checkpoint.load(tmp_path / "whole" / "last.pt")
    split = Checkpoint.load(tmp_path / "split" / "last.pt")
    assert split.step == 40
    for key in whole.weights:
        assert torch.equal(whole.weights[key], split.weights[key]), key
    for a, b in zip(whole.parts["optimizer"]["state"].values(), split.parts["optimizer"]["state"].values()):
        assert all(torch.equal(a[name], b[name]) for name in a)

    def logged(run, kind, key):
        return [(e["step"], e[key]) for e in read_metrics(tmp_path / run / "metrics.jsonl") if e["event"] == kind]
    assert logged("whole", "train", "loss") == logged("split", "train", "loss")
    assert logged("whole", "train", "lr") == logged("split", "train", "lr")
    assert logged("whole", "eval", "val_loss") == logged("split", "eval", "val_loss")


def test_a_wsd_run_given_a_longer_budget_goes_on_as_if_given_it_from_the_start(tmp_path, text_file, capsys):
    """40 steps (cooled from step 30), then --resume with 80: the run continues from stable.pt and ends
    as the 80-step run does, bit for bit; resuming again within that budget is a plain resume."""
    def config(steps):
        return small_config(**{"train.max_steps": steps, "train.max_epochs": None, "train.lr_schedule": "wsd",
                               "train.cooldown": 0.25, "train.warmup_steps": 5, "model.dropout": 0.2,
                               "model.num_layers": 2, "train.eval_interval": 10, "train.log_interval": 5})
    train(config(80), text_file, tmp_path / "whole", progress=False)
    train(config(40), text_file, tmp_path / "extended", progress=False)
    assert Checkpoint.load(tmp_path / "extended" / "stable.pt").step == 30
    capsys.readouterr()
    train(config(80), text_file, tmp_path / "extended", resume=True, progress=False)
    assert "extending: the cool-down that began at step 30 is undone" in capsys.readouterr().err

    whole, extended = (Checkpoint.load(tmp_path / run / "last.pt") for run in ("whole", "extended"))
    assert extended.step == 80 and Checkpoint.load(tmp_path / "extended" / "stable.pt").step == 60
    for key in whole.weights:
        assert torch.equal(whole.weights[key], extended.weights[key]), key

    def logged(run, key):
        return [(e["step"], e[key]) for e in read_metrics(tmp_path / run / "metrics.jsonl") if e["event"] == "train"]
    assert logged("whole", "lr") == logged("extended", "lr") and logged("whole", "loss") == logged("extended", "loss")


@pytest.mark.parametrize("optimizer, schedule", [("adamw", "cosine"), ("sgd", "step"), ("rmsprop", "constant"),
                                                 ("adamw", "wsd")])
def test_every_optimizer_and_schedule_trains(tmp_path, text_file, optimizer, schedule):
    lr = {"adamw": 1e-2, "sgd": 0.5, "rmsprop": 3e-3}[optimizer]
    config = small_config(**{"train.optimizer": optimizer, "train.lr_schedule": schedule, "train.lr": lr,
                             "train.max_steps": 60, "train.lr_decay_every": 30})
    train(config, text_file, tmp_path / "run", progress=False)
    losses = [e["loss"] for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train"]
    assert losses[-1] < losses[0] - 0.3


def test_tensorboard_holds_every_curve_and_a_sample(tmp_path, text_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(small_config(**{"train.max_steps": 50}), text_file, tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/bpc", "train/learning_rate", "train/grad_norm", "train/clip_share",
            "train/tokens_per_s", "val/loss", "val/bpc"} <= scalars
    assert any("sample" in tag for tag in events.Tags()["tensors"])


def test_per_layer_gradient_norms_are_logged_when_asked(tmp_path, text_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(**{"train.max_steps": 40, "model.num_layers": 2, "train.log_layer_grads": True,
                             "train.clip_norm": 0.01})
    train(config, text_file, tmp_path / "run", progress=False)
    events = read_metrics(tmp_path / "run" / "metrics.jsonl")
    grads = [e for e in events if e["event"] == "grads"]
    assert [e["step"] for e in grads] == [e["step"] for e in events if e["event"] == "train"] == [10, 20, 30, 40]
    assert all(set(e) == {"event", "step", "embedding", "layer0", "layer1", "head"} for e in grads)
    # Norms before clipping: clip_norm 0.01 is far below what backprop gives, and clipped norms could not exceed it.
    assert all(g[k] > 0 for g in grads for k in ("embedding", "layer0", "layer1", "head"))
    assert all(math.sqrt(sum(g[k] ** 2 for k in ("embedding", "layer0", "layer1", "head"))) > 0.1 for g in grads)
    tensorboard = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    tensorboard.Reload()
    assert {"grad_norm/embedding", "grad_norm/layer0", "grad_norm/layer1", "grad_norm/head"} <= set(
        tensorboard.Tags()["scalars"])
    train(small_config(**{"train.max_steps": 10}), text_file, tmp_path / "off", progress=False)
    assert not any(e["event"] == "grads" for e in read_metrics(tmp_path / "off" / "metrics.jsonl"))


def test_bidirectional_cannot_beat_chance_on_random_text(tmp_path):
    import random

    rng = random.Random(0)
    alphabet = "abcdefghijklmnop"
    path = tmp_path / "random.txt"
    path.write_text("".join(rng.choice(alphabet) for _ in range(40_000)))
    config = small_config(**{"model.bidirectional": True, "model.num_layers": 2, "train.lr": 1e-2,
                             "train.max_steps": 150, "train.eval_interval": 150})
    train(config, path, tmp_path / "run", progress=False)
    evaluation = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "eval"][-1]
    chance = math.log(len(alphabet))
    assert evaluation["val_loss_forward"] >= chance - 0.05
    assert evaluation["val_loss_backward"] >= chance - 0.05
    trained = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train"][-1]
    assert trained["loss_backward"] >= chance - 0.1  # a leak would drive training loss towards zero


def test_bidirectional_learns_both_directions_and_resumes_exactly(tmp_path, text_file):
    overrides = {"model.bidirectional": True, "train.max_steps": 40, "train.max_epochs": None,
                 "train.lr_schedule": "constant", "train.lr": 1e-2, "train.eval_interval": 20,
                 "model.dropout": 0.1, "model.num_layers": 2}
    train(small_config(**overrides), text_file, tmp_path / "whole", progress=False)
    train(small_config(**{**overrides, "train.max_steps": 20}), text_file, tmp_path / "split", progress=False)
    train(small_config(**overrides), text_file, tmp_path / "split", resume=True, progress=False)
    whole = Checkpoint.load(tmp_path / "whole" / "last.pt")
    split = Checkpoint.load(tmp_path / "split" / "last.pt")
    for key in whole.weights:
        assert torch.equal(whole.weights[key], split.weights[key]), key
    assert whole.parts["streams"]["backward"] is not None
    evaluation = [e for e in read_metrics(tmp_path / "whole" / "metrics.jsonl") if e["event"] == "eval"][-1]
    assert evaluation["val_loss_forward"] < 2.8 and evaluation["val_loss_backward"] < 2.8  # chance: ln 27 = 3.3
    assert evaluation["val_loss"] == evaluation["val_loss_forward"]


def test_init_from_keeps_the_checkpoint_architecture(tmp_path, text_file):
    train(small_config(**{"model.bidirectional": True, "train.max_steps": 5}), text_file, tmp_path / "a",
          progress=False)
    config = small_config(**{"train.max_steps": 5, "model.hidden_size": 64, "model.dropout": 0.3})
    train(config, text_file, tmp_path / "b", init_from=str(tmp_path / "a" / "last.pt"), progress=False)
    model_config = Checkpoint.load(tmp_path / "b" / "last.pt").config.model
    assert model_config.bidirectional is True and model_config.hidden_size == 32
    assert model_config.dropout == 0.3  # regularisation stays the user's choice


def request(config, text, out_dir, **options):
    """What ``train`` asks for."""
    from charlm.config import changed_keys
    from charlm.data.source import TextSource
    from charlm.train.loop import TrainRequest, recording

    source = TextSource.of(text)
    return TrainRequest(recording(config, source), changed_keys(config), source, out_dir, progress=False, **options)


def _train_poisoned(config, text, out_dir, poison):
    """Train as ``train`` does, after ``poison(trainer)`` has tampered with the trainer it set up."""
    with session(request(config, text, out_dir)) as trainer:
        poison(trainer)
        return fit(trainer)


def _at_steps(steps, method, after):
    """A poison: wrap ``trainer.<method>`` so that on the steps numbered in ``steps`` (1-based, as logged)
    ``after(trainer, result)`` gives what it returns instead."""
    def poison(trainer):
        original = getattr(trainer, method)

        def wrapped(*args):
            result = original(*args)
            return after(trainer, result) if trainer.run.state.step + 1 in steps else result
        setattr(trainer, method, wrapped)
    return poison


def _nan_loss(trainer, result):
    losses, penalty = result
    return {direction: loss * float("nan") for direction, loss in losses.items()}, penalty


def _inf_gradient(trainer, loss):
    trainer.params[0].grad[0, 0] = float("inf")  # the loss stays finite: only the norm can tell
    return loss


@pytest.mark.parametrize("method, fault", [("forward", _nan_loss), ("backward", _inf_gradient)])
def test_a_nan_or_inf_step_is_skipped_with_a_warning(tmp_path, text_file, capsys, method, fault):
    config = small_config(**{"train.max_steps": 20, "train.max_epochs": None, "train.log_interval": 5})
    result = _train_poisoned(config, text_file, tmp_path / "run", _at_steps({5, 6, 9}, method, fault))
    assert result.step == 20 and result.stop_reason == "max_steps"
    events = read_metrics(tmp_path / "run" / "metrics.jsonl")
    skips = [(e["step"], e["skipped"], e["bad_steps"]) for e in events if e["event"] == "skip"]
    assert skips == [(5, 1, 1), (6, 1, 2), (9, 1, 1)]  # train.nan_check step (a CPU's): read at every step
    assert events[-1]["skipped_steps"] == 3
    assert all(math.isfinite(e["loss"]) for e in events if e["event"] == "train")
    weights = Checkpoint.load(tmp_path / "run" / "last.pt").weights
    assert all(torch.isfinite(w).all() for w in weights.values())
    err = capsys.readouterr().err
    assert err.count("had a NaN or infinite loss or gradient; skipped its update") == 3
    assert "warning: step 6 had a NaN or infinite loss or gradient; skipped its update (2 in a row; 5 in a row" in err


def test_several_bad_steps_in_a_row_stop_and_keep_the_last_good_checkpoint(tmp_path, text_file):
    config = small_config(**{"train.max_steps": 100, "train.max_epochs": None, "train.checkpoint_interval": 10,
                             "train.max_bad_steps": 3, "train.eval_interval": 1000})
    with pytest.raises(CharlmError) as info:
        _train_poisoned(config, text_file, tmp_path / "run", _at_steps(set(range(13, 1000)), "forward", _nan_loss))
    message = str(info.value)
    assert "stopped at step 15: 3 steps in a row had a NaN or infinite loss" in message
    assert "lower train.lr (now 0.004) or lower train.clip_norm (now 5)" in message
    assert f"{tmp_path / 'run' / 'last.pt'} (step 10) is kept" in message
    checkpoint = Checkpoint.load(tmp_path / "run" / "last.pt")
    assert checkpoint.step == 10
    assert all(torch.isfinite(w).all() for w in checkpoint.weights.values())


def test_resuming_a_finished_run_asks_for_a_bigger_budget(tmp_path, text_file):
    config = small_config(**{"train.max_steps": 10, "train.max_epochs": None})
    train(config, text_file, tmp_path / "run", progress=False)
    with pytest.raises(CharlmError, match="already used its budget \\(train.max_steps = 10\\) at step 10: give a"
                                          " larger --max-steps"):
        train(config, text_file, tmp_path / "run", resume=True, progress=False)
    config.train.max_steps = 15
    assert train(config, text_file, tmp_path / "run", resume=True, progress=False).step == 15


def test_a_run_that_fails_at_once_leaves_no_directory(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CharlmError, match="is empty"):
        train(small_config(), empty, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_resumes_exactly(tmp_path):
    """SIGKILL a real `charlm train` eight times; every checkpoint stays loadable and the end result is
    bit for bit the run that was never killed."""
    import os
    import random
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import make_text

    text = tmp_path / "text.txt"
    text.write_text(make_text(60_000))
    settings = ["--no-progress", "--no-sample", "--max-steps", "500", "--set", "model.size=fixed", "--hidden-size", "64",
                "--num-layers", "2",
                "--dropout", "0.1", "--batch-size", "8", "--seq-len", "16", "--threads", "1",
                "--set", "train.warmup_steps=10", "--set", "train.eval_interval=20",
                "--set", "train.checkpoint_interval=7", "--set", "train.log_interval=5",
                "--set", "train.sample_length=0", "--precision", "fp32", "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def charlm_train(*args):
        return subprocess.Popen([sys.executable, "-m", "charlm", "train", *map(str, args), *settings], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    reference = charlm_train(text, "-o", tmp_path / "whole")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    run = tmp_path / "run"

    def starts() -> int:
        return sum(e["event"] == "start" for e in read_metrics(run / "metrics.jsonl"))

    def training_since_start(starts_before: int) -> bool:
        events = read_metrics(run / "metrics.jsonl")
        kinds = [e["event"] for e in events]
        return kinds.count("start") > starts_before and kinds[-1] != "start"

    rng = random.Random(5)
    starts_before, process, kills = starts(), charlm_train(text, "-o", run), 0
    while kills < 8:
        # Half the kills land at a random moment after start (start-up, cache, first steps), half at a
        # random point of training once it runs, which is when checkpoints and logs are being written.
        if kills % 2 == 0:
            time.sleep(rng.uniform(0.2, 2.5))
        else:
            deadline = time.time() + 60
            while not training_since_start(starts_before):
                assert process.poll() is None and time.time() < deadline, process.stderr.read()
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is not None:  # it finished before the kill: fine, and it has to be clean
            assert process.returncode == 0, process.stderr.read()
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        for name in ("last.pt", "best.pt"):
            if (run / name).exists():
                Checkpoint.load(run / name)  # never half-written
        assert all(isinstance(e, dict) for e in read_metrics(run / "metrics.jsonl"))
        starts_before = starts()
        if (run / "last.pt").exists() or (run / "best.pt").exists():
            process = charlm_train("--resume", run)
            continue
        if any((run / name).exists() for name in ("metrics.jsonl", "config.yaml")):
            # Killed before its first checkpoint: nothing to resume, and a new run must not mix in.
            refused = subprocess.run([sys.executable, "-m", "charlm", "train", text, "-o", run, *settings],
                                     env=env, capture_output=True, text=True)
            assert refused.returncode == 2 and "delete them or choose another -o/--out" in refused.stderr
            shutil.rmtree(run)
            starts_before = 0
        process = charlm_train(text, "-o", run)
    if process.poll() is None or process.returncode != 0:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    assert kills >= 5
    assert not list(run.glob(".*.tmp"))  # a temp file a kill left mid-write is cleared by the next run

    whole, killed = Checkpoint.load(tmp_path / "whole" / "last.pt"), Checkpoint.load(run / "last.pt")
    assert killed.step == 500
    for key in whole.weights:
        assert torch.equal(whole.weights[key], killed.weights[key]), key

    def losses(directory):
        return [(e["step"], e["loss"]) for e in read_metrics(directory / "metrics.jsonl") if e["event"] == "train"]
    assert losses(run) == losses(tmp_path / "whole")


@pytest.mark.slow
def test_a_real_write_failure_mid_training_keeps_the_checkpoints(tmp_path, text_file):
    """The OS refuses the checkpoint write (file-size limit: EFBIG, as a full disk gives ENOSPC)."""
    import resource
    import signal
    import subprocess
    import sys

    overrides = {"train.max_steps": 10, "train.max_epochs": None, "model.hidden_size": 64}
    train(small_config(**overrides), text_file, tmp_path / "run", progress=False)
    before = {name: (tmp_path / "run" / name).read_bytes() for name in ("last.pt", "best.pt")}
    limit = min(len(data) for data in before.values()) // 2

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get the EFBIG error instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "charlm", "train", "--resume", str(tmp_path / "run"), "--max-steps", "30",
         "--no-progress", "--no-sample"], preexec_fn=limit_file_size, capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "File too large" in errors[0] and "file-size limit" in errors[0]
    for name, data in before.items():
        assert (tmp_path / "run" / name).read_bytes() == data
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_weight_averaging_publishes_the_average_and_resumes_exactly(tmp_path, text_file):
    settings = {"train.ema_decay": 0.99, "train.max_steps": 1, "train.eval_interval": 10, "model.dropout": 0.1,
                "train.lr_schedule": "constant", "train.warmup_steps": 5}  # the same schedule for 20 and 40 steps
    config = small_config(**settings)
    train(config, text_file, tmp_path / "one", progress=False)
    checkpoint = Checkpoint.load(tmp_path / "one" / "last.pt")
    before = _initial_weights(config, len(checkpoint.vocab))
    # The first update is weighted 0.9 (the decay ramps up as min(0.99, (1 + n) / (10 + n))).
    for key, initial in before.items():
        expected = initial + 0.9 * (checkpoint.parts["model"][key] - initial)
        torch.testing.assert_close(checkpoint.weights[key], expected)
    assert checkpoint.parts["average"]["updates"] == 1

    settings["train.max_steps"] = 40
    train(small_config(**settings), text_file, tmp_path / "whole", progress=False)
    train(small_config(**{**settings, "train.max_steps": 20}), text_file, tmp_path / "half", progress=False)
    train(small_config(**settings), text_file, tmp_path / "half", resume=True, progress=False)
    whole, half = Checkpoint.load(tmp_path / "whole" / "last.pt"), Checkpoint.load(tmp_path / "half" / "last.pt")
    for weights in (lambda c: c.weights, lambda c: c.parts["model"]):  # the average and the raw weights
        assert all(torch.equal(weights(whole)[k], weights(half)[k]) for k in whole.weights)
    assert not torch.equal(whole.weights["head.weight"], whole.parts["model"]["head.weight"])
    evals = [e["val_loss"] for e in read_metrics(tmp_path / "whole" / "metrics.jsonl") if e["event"] == "eval"]
    import charlm

    model = charlm.load(tmp_path / "whole" / "last.pt")  # what sampling and eval use: the average
    assert model.evaluate_part(model.own_data("val"))["loss"] == pytest.approx(evals[-1], rel=1e-5)


def test_bad_steps_judged_on_the_device_are_reported_at_the_log_interval(tmp_path, text_file, capsys):
    """train.nan_check log (CUDA's choice): the same skips, read every log_interval steps: one event and
    one warning per window that had any; a divergence stops the run at the read and keeps the last
    checkpoint written before it began."""
    config = small_config(**{"train.max_steps": 20, "train.max_epochs": None, "train.log_interval": 5,
                             "train.nan_check": "log"})
    result = _train_poisoned(config, text_file, tmp_path / "run", _at_steps({5, 6, 9}, "forward", _nan_loss))
    assert result.step == 20 and result.stop_reason == "max_steps"
    events = read_metrics(tmp_path / "run" / "metrics.jsonl")
    skips = [(e["step"], e["skipped"], e["bad_steps"]) for e in events if e["event"] == "skip"]
    assert skips == [(5, 1, 1), (9, 2, 2)] and events[-1]["skipped_steps"] == 3
    assert all(math.isfinite(e["loss"]) for e in events if e["event"] == "train")
    err = capsys.readouterr().err
    assert err.count("had a NaN or infinite loss or gradient; skipped") == 2
    assert "warning: 2 steps up to step 9 had a NaN or infinite loss or gradient; skipped their updates (at most 2" in err

    # last.pt at 5 and 10; at 15 the checkpoint's read finds 13-15 bad and writes nothing; the log read
    # at 20 stops the run
    config = small_config(**{"train.max_steps": 100, "train.max_epochs": None, "train.checkpoint_interval": 5,
                             "train.max_bad_steps": 3, "train.eval_interval": 1000, "train.nan_check": "log"})
    with pytest.raises(CharlmError, match="stopped at step 20: 8 steps in a row had a NaN") as info:
        _train_poisoned(config, text_file, tmp_path / "bad", _at_steps(set(range(13, 1000)), "forward", _nan_loss))
    assert f"{tmp_path / 'bad' / 'last.pt'} (step 10) is kept" in str(info.value)
    assert Checkpoint.load(tmp_path / "bad" / "last.pt").step == 10
