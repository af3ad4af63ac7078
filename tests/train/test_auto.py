"""model.size auto: the rule as a pure function of measured speeds, the probe's share of the budget,
the keys given, and what a run records."""

import json
import math
import time
from dataclasses import replace

import pytest
import torch

from charlm.config import build_config, resolve
from charlm.model.network import CharRNN
from charlm.train import auto
from charlm.train.auto import Budget, Shape, SpeedModel, choose

VOCAB = 65


def _speeds(per_flop: dict[str, float]) -> SpeedModel:
    """A machine whose cost per token is exactly proportional to the arithmetic, per precision."""
    return SpeedModel({precision: (0.0, cost) for precision, cost in per_flop.items()})


@pytest.mark.parametrize("shape", [Shape(256), Shape(512, layers=3, embedding=128), Shape(96, cell="gru", embedding=96),
                                   Shape(128, cell="minlstm"), Shape(96, 4, cell="mingru", block="residual", ffn=2),
                                   Shape(64, 3, cell="lstm", block="residual", norm="rms"),
                                   Shape(96, 3, cell="mingru", input_conv=2), Shape(64, 4, cell="minlstm", block="residual",
                                                                                 ffn=2, input_conv=3)])
def test_parameters_are_counted_as_the_model_counts_them(shape):
    model = CharRNN(VOCAB, shape.cell, shape.hidden, shape.embedding, shape.layers, block=shape.block, ffn=shape.ffn,
                    norm=shape.norm, input_conv=shape.input_conv)
    assert shape.parameters(VOCAB) == model.num_parameters()


def test_the_speed_model_goes_through_what_was_measured():
    small, large = Shape(256), Shape(512)
    timings = [{"precision": "bf16", "flops": s.flops_per_token(VOCAB), "seconds_per_token": t}
               for s, t in ((small, 1 / 70_000), (large, 1 / 21_000))]
    model = SpeedModel.fit(timings + [{"precision": "fp32", "flops": small.flops_per_token(VOCAB),
                                       "seconds_per_token": 1 / 28_000}])
    assert model.tokens_per_s(small, "bf16", VOCAB) == pytest.approx(70_000)
    assert model.tokens_per_s(large, "bf16", VOCAB) == pytest.approx(21_000)
    assert 21_000 < model.tokens_per_s(Shape(384), "bf16", VOCAB) < 70_000
    assert model.tokens_per_s(large, "fp32", VOCAB) == pytest.approx(28_000 / 4.15, rel=0.1)  # one point: ∝ arithmetic


def test_more_budget_buys_a_wider_model_at_the_target_tokens_per_parameter():
    speeds = _speeds({"bf16": 8e-12})
    widths = [choose(speeds, Budget(seconds=s), 10**9, VOCAB).shape.hidden for s in (30, 60, 600, 3600)]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    choice = choose(speeds, Budget(seconds=120), 10**9, VOCAB)

    def miss(c):  # how far from the target for its own compute, in log
        return abs(math.log(c.tokens / c.parameters / auto.target_ratio(c.tokens * c.parameters)))
    for width in (w for w in auto.WIDTHS if w != choice.shape.hidden):  # no other width lands closer
        assert miss(choose(speeds, Budget(seconds=120), 10**9, VOCAB, widths=(width,))) >= miss(choice)


def test_the_target_falls_as_compute_grows_through_the_measured_optima():
    assert auto.target_ratio(auto.REFERENCE_COMPUTE) == auto.TOKENS_PER_PARAMETER
    assert auto.target_ratio(4e13) < 1.2 < 3 < auto.target_ratio(2.4e12) < 5  # 10 minutes of a 2x768; 60 s, 1 thread
    bf16_here = SpeedModel.fit([{"precision": "bf16", "flops": Shape(w).flops_per_token(VOCAB), "seconds_per_token": t}
                                for w, t in ((256, 1 / 70_000), (512, 1 / 21_000))])  # this Xeon, 2 threads
    assert choose(bf16_here, Budget(seconds=60), 1_003_854, VOCAB).shape.hidden == 256  # the measured best
    assert choose(bf16_here, Budget(seconds=600), 1_003_854, VOCAB).shape.hidden == 768


def test_bf16_only_where_it_is_clearly_faster_here():
    assert auto.faster({"bf16": 200_000, "fp32": 214_000}) == "fp32"
    assert auto.faster({"bf16": 220_000, "fp32": 214_000}) == "fp32"  # a tie: the timings are noise
    assert auto.faster({"bf16": 70_000, "fp32": 28_000}) == "bf16"
    assert auto.faster({"bf16": 70_000}) == "bf16"
    assert choose(_speeds({"bf16": 8e-12, "fp32": 2e-11}), Budget(seconds=60), 10**9, VOCAB).precision == "bf16"
    assert choose(_speeds({"bf16": 2e-11, "fp32": 8e-12}), Budget(seconds=60), 10**9, VOCAB).precision == "fp32"


def test_budgets_in_steps_and_epochs_need_no_speed():
    slow, fast = _speeds({"fp32": 1e-10}), _speeds({"fp32": 1e-12})
    for budget in (Budget(steps=2000), Budget(epochs=3.0)):
        assert choose(slow, budget, 10**6, VOCAB).shape == choose(fast, budget, 10**6, VOCAB).shape
    assert Budget(seconds=100, steps=10).tokens(1e6, 2048, 10**9) == 10 * 2048  # whichever comes first
    assert choose(slow, Budget(), 10**6, VOCAB).shape.hidden == 256  # no budget: the default width
    assert Budget(seconds=100).tokens(1000, 2048, 10**9, spent=3) == pytest.approx((100 * 0.97 - 3) * 1000)


def test_a_text_read_many_times_gets_dropout():
    speeds = _speeds({"bf16": 8e-12})
    once = choose(speeds, Budget(seconds=600), 10**9, VOCAB)
    often = choose(speeds, Budget(seconds=600), 10**6, VOCAB)
    assert once.epochs < 1 and once.dropout == 0.0
    assert often.epochs >= auto.DROPOUT_FROM_PASSES and often.dropout >= auto.DROPOUT
    assert auto.dropout_for(2.0, 0.01) == 0.0  # read twice: no dropout, however large the model
    assert auto.dropout_for(5.0, 0.14) == auto.DROPOUT  # tinyshakespeare, 10 minutes of a 2x768
    assert auto.dropout_for(20.0, 0.057) == auto.MOST_DROPOUT  # names.txt, 5 minutes of a 2x512
    assert auto.DROPOUT < auto.dropout_for(20.0, 0.08) < auto.MOST_DROPOUT
    assert auto.learning_rate_for(512) < auto.learning_rate_for(256)


def test_a_text_read_past_the_horizon_is_regularised_as_awd_lstm_does():
    speeds = _speeds({"bf16": 8e-12})
    once = choose(speeds, Budget(seconds=600), 10**9, VOCAB)
    often = choose(speeds, Budget(seconds=600), 10**6, VOCAB)
    assert not once.text_binds and (once.settings()["train.ar"], once.settings()["model.dropout_mask"]) == (0, "element")
    assert often.text_binds and {key: often.settings()[key] for key in auto.REGULARISERS} == auto.REGULARISERS
    config, given = resolve(None, [("train.max_time", 600.0)])
    applied = auto.apply(config, often.settings())
    assert (applied.model.dropout_mask, applied.train.ar, applied.train.tar) == ("locked", 2.0, 1.0)
    assert not choose(speeds, Budget(), 10**6, VOCAB).text_binds  # no budget: no horizon to judge by


@pytest.mark.parametrize("seconds, text, said", [
    (60, 10**9, "the compute binds (under 4.5 passes)"),
    (600, 10**6, "the text binds (from 4.5 passes on): locked dropout masks, AR 0.5, TAR 1"),
    (36_000, 10**6, "past the longest runs the rule was fitted on (4e+13): extrapolated")])
def test_the_auto_line_names_the_regime_and_what_it_set(monkeypatch, seconds, text, said):
    fake, _ = _fake_timing(0.0, {"bf16": 70_000})
    monkeypatch.setattr(auto, "time_trainings", fake)
    config, given = resolve(None, [("train.max_time", float(seconds)), ("train.ar", 0.5)])  # a key given wins
    decision = auto.decide(config, given, auto.Text(text, 0, VOCAB), torch.device("cpu"), ["bf16"])
    assert said in decision.line(text) and "train.ar" not in decision.settings
    assert decision.event()["regime"] == ("text" if "text binds" in said or seconds > 600 else "compute")


def test_evaluations_stay_within_their_share_of_a_time_budget():
    speeds = _speeds({"bf16": 8e-12})
    short = choose(speeds, Budget(seconds=60), 10**6, VOCAB, eval_tokens=100_000)
    steps = short.tokens / short.shape.tokens_per_step
    assert int(steps) // short.eval_interval <= 1  # a one-minute run is evaluated once, at its end
    long = choose(speeds, Budget(seconds=1200), 10**6, VOCAB, eval_tokens=100_000)
    evaluations = long.tokens / long.shape.tokens_per_step / long.eval_interval
    assert 5 <= evaluations <= min(20, auto.EVAL_SHARE * 1200 * long.tokens_per_s * 3 / 100_000) + 1


def _fake_timing(seconds_per_call: float, rates: dict[str, float]):
    calls = []

    def time_trainings(runs, vocab, device):
        time.sleep(seconds_per_call * len(runs))
        calls.extend((shape.hidden, precision) for shape, precision in runs)
        return [1 / rates[precision] * shape.flops_per_token(vocab) / Shape(256).flops_per_token(vocab)
                for shape, precision in runs]
    return time_trainings, calls


def test_the_probe_times_its_runs_in_turns_on_real_steps(monkeypatch):
    order, real = [], auto.Trial.step
    monkeypatch.setattr(auto.Trial, "step", lambda self: order.append(self.shape.hidden) or real(self))
    runs = [(Shape(16, 1, 8, batch=2, seq_len=4), "fp32"), (Shape(24, 1, 8, "minlstm", batch=2, seq_len=4), "fp32")]
    seconds = auto.time_trainings(runs, 8, torch.device("cpu"), min_seconds=0.0)
    assert order == [16, 16, 24, 24] + [16, 24] * 3  # two to warm up each, then one of each in turn
    assert len(seconds) == 2 and all(0 < s < 1 for s in seconds)


def test_the_probe_keeps_to_its_share_of_a_short_budget(monkeypatch):
    fake, calls = _fake_timing(0.07, {"bf16": 70_000, "fp32": 28_000})
    monkeypatch.setattr(auto, "time_trainings", fake)
    config, given = resolve(None, [("train.max_time", 4.0)])  # 3 %: 0.12 s, less than the first two timings take
    decision = auto.decide(config, given, auto.Text(10**6, 0, VOCAB), torch.device("cpu"), ["bf16", "fp32"])
    assert len(calls) == 2 and decision.probe_seconds < 0.14 + 0.1  # it stops after the timings that overran
    long, given = resolve(None, [("train.max_time", 600.0)])
    calls.clear()
    auto.decide(long, given, auto.Text(10**6, 0, VOCAB), torch.device("cpu"), ["bf16", "fp32"])
    # Both precisions at 256; then the faster at 512 (a 10-minute model is wider) and the min family once.
    assert calls[:3] == [(256, "bf16"), (256, "fp32"), (512, "bf16")] and len(calls) == 4 and calls[3][1] == "bf16"


def test_the_second_timings_are_taken_near_the_widths_the_rule_will_choose(monkeypatch):
    fake, calls = _fake_timing(0.0, {"fp32": 28_000})
    monkeypatch.setattr(auto, "time_trainings", fake)
    for seconds in (60.0, 3600.0):
        calls.clear()
        config, given = resolve(None, [("train.max_time", seconds)])
        decision = auto.decide(config, given, auto.Text(10**6, 0, VOCAB), torch.device("cpu"), ["fp32"])
        side, family = calls[1][0], calls[2][0]
        chosen = decision.choice.shape.hidden
        assert (side < 256) == (chosen < 256), seconds  # the line is measured on the side of the choice
        rival = auto.choose(decision.speeds.like(decision.speeds.timings[-1]), Budget(seconds), 10**6, VOCAB,
                            template=replace(Shape(256), **auto.MIN_FAMILY))
        assert abs(math.log(family / rival.shape.hidden)) <= math.log(1.5), seconds  # the family near its own


def test_the_keys_given_win(monkeypatch):
    fake, calls = _fake_timing(0.0, {"bf16": 70_000, "fp32": 28_000})
    monkeypatch.setattr(auto, "time_trainings", fake)
    config, given = resolve(None, [("train.max_time", 600.0), ("model.hidden_size", 320), ("train.lr", 0.004),
                                   ("model.dropout", 0.05)])  # lr 0.004 is the default value: given all the same
    decision = auto.decide(config, given, auto.Text(10**6, 0, VOCAB), torch.device("cpu"), ["bf16", "fp32"])
    chosen, applied = decision.settings, auto.apply(config, decision.settings)
    assert {h for h, _ in calls} == {320}  # the width was given: only it is timed
    assert applied.model.hidden_size == 320 and applied.train.lr == 0.004 and applied.model.dropout == 0.05
    assert "train.lr" not in chosen and chosen["model.embedding_size"] == 64 and chosen["train.precision"] == "bf16"
    assert config.train.precision == "auto" and applied.train.precision == "bf16"  # a new config: the old stays
    assert ", lr 0.004, dropout 0.05 —" in decision.line(10**6)  # the line says what the run will use


def _family_timing(min_speedup: float):
    """A machine where the min-cell family runs ``min_speedup`` times faster per flop than the LSTM."""
    calls = []

    def time_trainings(runs, vocab, device):
        calls.extend(shape for shape, _ in runs)
        return [2e-11 * shape.flops_per_token(vocab) / (min_speedup if shape.cell == FAMILY else 1.0)
                for shape, _ in runs]
    return time_trainings, calls


FAMILY = auto.MIN_FAMILY["cell"]


@pytest.mark.parametrize("seconds, speedup, text, chosen", [
    (600, 1.0, 10**9, "lstm"), (600, 4.0, 10**9, "lstm"), (600, 10.0, 10**9, FAMILY), (60, 0.25, 10**9, "lstm"),
    (60, 1.0, 10**9, FAMILY), (600, 10.0, 10**6, "lstm"), (60, 1.0, 10**5, "lstm")])  # past the horizon: the LSTM
def test_min_cells_are_chosen_only_where_they_run_fast_enough_to_learn_more(monkeypatch, seconds, speedup, text,
                                                                             chosen):
    fake, calls = _family_timing(speedup)  # at ten minutes they must run far faster; in a minute, nearly as fast
    monkeypatch.setattr(auto, "time_trainings", fake)
    config, given = resolve(None, [("train.max_time", float(seconds))])
    decision = auto.decide(config, given, auto.Text(text, 10**5, VOCAB), torch.device("cpu"), ["fp32"])
    assert [shape.cell for shape in calls[:3]] == ["lstm", "lstm", FAMILY] and len(calls) <= 4
    applied = auto.apply(config, decision.settings)
    assert applied.model.cell == chosen
    if chosen == FAMILY:  # the whole family: its block, depth, feed-forward part and convolution, an embedding as wide
        m = applied.model
        assert (m.block, m.num_layers, m.ffn, m.input_conv, m.embedding_size) == ("residual", 4, 2, 2, m.hidden_size)
    else:
        assert applied.model.block == "plain" and applied.model.ffn == 0


def test_the_family_is_timed_again_where_its_timing_moves_its_width(monkeypatch):
    # A min family's elementwise work grows with width x layers, not with its arithmetic: narrower, it is slower
    # than a line through one wider timing says. Timed again at the width that timing chose, it is judged there.
    calls = []

    def time_trainings(runs, vocab, device):
        calls.extend(shape for shape, _ in runs)
        return [2e-11 * shape.flops_per_token(vocab) + (4e-8 * shape.hidden * shape.layers if shape.cell == FAMILY else 0)
                for shape, _ in runs]
    monkeypatch.setattr(auto, "time_trainings", time_trainings)
    config, given = resolve(None, [("train.max_time", 180.0)])
    decision = auto.decide(config, given, auto.Text(10**6, 10**5, VOCAB), torch.device("cpu"), ["fp32"])
    first, again = [shape for shape in calls if shape.cell == FAMILY]
    assert again.hidden < first.hidden  # it moved to a narrower width, and was timed there
    measured = decision.speeds.timings[-1]
    assert measured["shape"] == again.describe()
    family = auto.family_speeds(decision.speeds, decision.speeds.timings[-2:])
    assert family.tokens_per_s(again, "fp32", VOCAB) == pytest.approx(measured["tokens_per_s"], rel=1e-3)
    rival = auto.choose(family, Budget(180.0), 10**6, VOCAB, template=replace(Shape(256), **auto.MIN_FAMILY))
    assert abs(math.log(rival.shape.hidden / again.hidden)) <= math.log(1.5)  # its line goes through both timings


def test_a_fixed_cell_or_block_keeps_the_rule_to_it(monkeypatch):
    fake, calls = _family_timing(6.0)
    monkeypatch.setattr(auto, "time_trainings", fake)
    for key, value in (("model.cell", "lstm"), ("model.block", "residual"), ("model.num_layers", 3)):
        calls.clear()
        config, given = resolve(None, [("train.max_time", 600.0), (key, value)])
        decision = auto.decide(config, given, auto.Text(10**6, 10**5, VOCAB), torch.device("cpu"), ["fp32"])
        assert {shape.cell for shape in calls} == {"lstm"}, key
        assert auto.apply(config, decision.settings).model.cell == "lstm"
    config, given = resolve(None, [("train.max_time", 600.0), ("model.block", "residual")])
    applied = auto.apply(config, auto.decide(config, given, auto.Text(10**6, 10**5, VOCAB), torch.device("cpu"),
                                             ["fp32"]).settings)
    assert applied.model.embedding_size == applied.model.hidden_size  # a residual stack's embedding is as wide


def test_better_weighs_the_rival_at_its_worth():
    lstm = auto.Choice(Shape(256), "fp32", 4e-3, 0.0, 100, 10_000, 1e7, 1.0, 10**6)
    rival = auto.Choice(Shape(256, cell="minlstm"), "fp32", 4e-3, 0.0, 100, 30_000, 3e7, 3.0, 10**6)
    assert auto.better(lstm, rival, lambda c: 0.4) is rival and auto.better(lstm, rival, lambda c: 0.3) is lstm
    unlimited = auto.Choice(Shape(256), "fp32", 4e-3, 0.0, 250, 10_000, math.inf, math.inf, 10**6)
    assert auto.better(unlimited, rival, lambda c: 1.0) is unlimited
    memorising = replace(rival, epochs=auto.TEXT_BINDS_FROM)  # past the horizon: the LSTM, whatever the worth
    assert auto.better(lstm, memorising, lambda c: 10.0) is lstm


def test_the_min_family_is_worth_more_than_its_compute_early_and_less_late():
    worth = auto.min_cell_worth
    assert worth(1e11) == worth(1e12) == auto.WORTH_AT_LOW  # up to a minute on two cores
    assert worth(4e12) < 1.0 < worth(3e12) and 0.25 < worth(1.4e13) < 0.45  # a tie near 3e12; a third at 10 min
    computes = [1e11 * 2 ** k for k in range(12)]
    assert all(worth(a) * a < worth(b) * b for a, b in zip(computes, computes[1:]))  # more compute is still more


def test_precision_auto_falls_back_to_fp32_where_bf16_is_slower(monkeypatch):
    fake, _ = _fake_timing(0.0, {"bf16": 20_000, "fp32": 26_000})  # a GRU on an AMX CPU, say
    monkeypatch.setattr(auto, "time_trainings", fake)
    config, given = resolve(None, [("model.size", "fixed"), ("model.cell", "gru")])
    decision = auto.decide_precision(config, given, VOCAB, torch.device("cpu"), ["bf16", "fp32"])
    assert decision.settings == {"train.precision": "fp32"}
    assert auto.apply(config, decision.settings).train.precision == "fp32"
    assert "fp32" in decision.line(10**6)


@pytest.mark.slow
def test_a_run_records_its_choice_and_a_resume_keeps_it(tmp_path, text_file):
    from charlm.train import train
    from charlm.train.checkpoint import Checkpoint
    from charlm.train.logs import read_metrics

    config = build_config(None, [("train.max_time", 4.0), ("train.max_epochs", None), ("train.threads", 1),
                                 ("train.device", "cpu"), ("train.sample_length", 0)])
    train(config, text_file, tmp_path / "run", progress=False)
    events = read_metrics(tmp_path / "run" / "metrics.jsonl")
    probe = next(e for e in events if e["event"] == "probe")
    saved = Checkpoint.load(tmp_path / "run" / "last.pt").config
    assert probe["chosen"]["model.hidden_size"] == saved.model.hidden_size
    assert 0 < probe["seconds"] <= events[-1]["time"]  # the probe counts in the budget
    assert f"hidden_size: {saved.model.hidden_size}" in (tmp_path / "run" / "config.yaml").read_text()
    saved.train.max_time = 6.0
    train(saved, text_file, tmp_path / "run", resume=True, progress=False)
    events = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert sum(e["event"] == "probe" for e in events) == 1  # no second probe: the run keeps its choice
    assert Checkpoint.load(tmp_path / "run" / "last.pt").config.to_dict() == saved.to_dict()


@pytest.mark.slow
def test_the_command_line_says_what_it_chose(tmp_path, text_file):
    from tests.conftest import charlm_cli

    result = charlm_cli("train", text_file, "-o", tmp_path / "run", "--max-time", "3s", "--threads", "1", "--device",
                        "cpu", "--no-progress", "--no-sample")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("auto: "))
    assert "lstm" in line and "tok/s here" in line and "per parameter" in line
    config = json.loads(json.dumps(read_yaml(tmp_path / "run" / "config.yaml")))
    assert config["model"]["size"] == "auto" and config["model"]["embedding_size"] == 64


def read_yaml(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_list_is_timed_in_batches_of_its_lines_and_gets_no_seq_len(monkeypatch):
    seen = []
    fake, _ = _fake_timing(0.0, {"fp32": 28_000})
    monkeypatch.setattr(auto, "time_trainings", lambda runs, *a: seen.extend(s.seq_len for s, _ in runs) or fake(runs, *a))
    config, given = resolve(None, [("train.max_time", 60.0), ("data.mode", "lines")])
    decision = auto.decide(config, given, auto.Text(10**5, 0, VOCAB, window_length=7.4), torch.device("cpu"), ["fp32"])
    assert set(seen) == {7} and "train.seq_len" not in decision.settings and "train.lr" in decision.settings
