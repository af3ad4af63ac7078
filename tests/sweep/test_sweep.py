import csv
import signal
import subprocess
import sys
import time

import pytest

from charlm.errors import CharlmError
from charlm.sweep import load_sweep, run_sweep

FAST = ("{model.size: fixed, train.max_steps: %d, train.max_epochs: null, train.eval_interval: 10, model.num_layers: 1,"
        " model.hidden_size: 16, train.batch_size: 8, train.seq_len: 16, train.sample_length: 0,"
        " train.device: cpu, train.warmup_steps: 0, train.checkpoint_interval: 10}")


@pytest.fixture
def text(tmp_path):
    from tests.conftest import make_text

    path = tmp_path / "text.txt"
    path.write_text(make_text(20_000))
    return path


def _sweep_file(tmp_path, text, body, steps=20):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"data: {{path: {text}}}\nset: {FAST % steps}\n{body}")
    return path


def _charlm(*args):
    from tests.conftest import charlm_cli

    return charlm_cli(*args)  # the scheduler here; its trials are processes of their own


GRID = "method: grid\nparameters:\n  model.cell: {values: [gru, lstm]}\n  train.lr: {values: [0.01]}\n"


@pytest.mark.slow
def test_grid_with_two_workers_runs_each_point_once_and_resumes_to_nothing(tmp_path, text):
    sweep = _sweep_file(tmp_path, text, GRID)
    dry = _charlm("sweep", sweep, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("  - model.cell=") == 2
    out = tmp_path / "out"
    result = _charlm("sweep", sweep, "-o", out, "--workers", "2")
    assert result.returncode == 0, result.stderr
    trials = sorted(p.name for p in out.glob("trial-*"))
    assert trials == ["trial-0000", "trial-0001"]
    for name in trials:
        assert (out / name / "best.pt").exists() and (out / name / "metrics.jsonl").exists()
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["model.cell"], float(r["train.lr"])) for r in rows) == [("gru", 0.01), ("lstm", 0.01)]
    assert all(r["state"] == "complete" for r in rows)
    losses = [float(r["best_val_loss"]) for r in rows]
    assert losses == sorted(losses)  # best first
    assert result.stdout.splitlines()[0].split()[:3] == ["trial", "model.cell", "train.lr"]
    assert (out / "best").resolve() == (out / f"trial-{int(rows[0]['trial']):04d}").resolve()
    assert _charlm("sample", out / "best", "--length", "20").returncode == 0  # an ordinary run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "trial-0000" / "tensorboard"))
    events.Reload()
    assert events.PluginTagToContent("hparams")  # the HParams view across trials

    again = _charlm("sweep", sweep, "-o", out, "--workers", "2")
    assert again.returncode == 0 and "2 of 2 trials done" in again.stderr
    assert sorted(p.name for p in out.glob("trial-*")) == trials
    report = _charlm("sweep", sweep, "-o", out, "--report")
    assert report.stdout == again.stdout


@pytest.mark.slow
def test_a_pruner_stops_hopeless_trials(tmp_path, text):
    body = ("method: random\ntrials: 4\nseed: 3\npruner: {type: median, startup_trials: 2}\n"
            "parameters:\n  train.lr: {distribution: log_uniform, min: 1.0e-7, max: 3.0e-2}\n")
    spec = load_sweep(_sweep_file(tmp_path, text, body, steps=60))
    rows = run_sweep(spec, tmp_path / "out", workers=2, echo=lambda line: None)
    states = [r.state for r in rows]
    assert len(rows) == 4 and "PRUNED" in states and "COMPLETE" in states
    pruned = [r for r in rows if r.state == "PRUNED"]
    best = rows[0]
    assert all(r.params["train.lr"] < best.params["train.lr"] for r in pruned)  # the tiny rates, as expected
    assert all(r.steps < 60 for r in pruned)


@pytest.mark.slow
def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path, text):
    sweep = _sweep_file(tmp_path, text, GRID, steps=200)
    out = tmp_path / "out"
    scheduler = subprocess.Popen([sys.executable, "-m", "charlm", "sweep", str(sweep), "-o", str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "trial-0000" / "last.pt").exists():
        assert time.time() < deadline and scheduler.poll() is None
        time.sleep(0.1)
    scheduler.send_signal(signal.SIGTERM)
    _, err = scheduler.communicate(timeout=120)
    assert scheduler.returncode == 130 and "run the same command again to continue" in err, err
    step_at_stop = _info_step(out / "trial-0000")

    sweep.write_text(sweep.read_text())  # the same file, run again
    result = _charlm("sweep", sweep, "-o", out, "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "interrupted trial(s) to re-run" in result.stderr and "resumed in trial-0000" in result.stderr, result.stderr
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["state"] for r in rows].count("complete") == 2
    assert [r["state"] for r in rows].count("interrupted") >= 1
    assert _info_step(out / "trial-0000") > step_at_stop  # the re-run continued that trial's run


def _info_step(run):
    import json

    return json.loads(_charlm("info", run / "last.pt", "--json").stdout)["step"]


@pytest.mark.slow
def test_another_sweep_into_the_same_directory_is_refused(tmp_path, text):
    out = tmp_path / "out"
    first = _sweep_file(tmp_path, text, "method: grid\nparameters:\n  model.cell: {values: [gru]}\n", steps=10)
    run_sweep(load_sweep(first), out, echo=lambda line: None)
    first.write_text(first.read_text().replace("[gru]", "[lstm]"))
    with pytest.raises(CharlmError, match="started from a different sweep file: use another -o/--out"):
        run_sweep(load_sweep(first), out, echo=lambda line: None)


def test_cli_sweep_errors_are_one_line(tmp_path, text):
    result = _charlm("sweep", tmp_path / "nope.yaml")
    assert result.returncode == 2 and result.stderr.startswith("error: config file") and "Traceback" not in result.stderr
    result = _charlm("sweep", _sweep_file(tmp_path, text, GRID), "--workers", "0")
    assert result.returncode == 2 and "--workers must be >= 1" in result.stderr


@pytest.mark.slow
def test_a_sweep_over_a_list_trains_in_lines_mode(tmp_path):
    lines = [f"{first}{second}" for first in ("ann", "bob", "cid", "dee", "eve") for second in ("a", "ie", "y", "o")]
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines * 4) + "\n")
    sweep = _sweep_file(tmp_path, path, "config: {data: {mode: lines}}\nmethod: grid\nparameters:\n"
                                          "  model.cell: {values: [gru, lstm]}\n")
    result = _charlm("sweep", sweep, "-o", tmp_path / "out", "--workers", "2")
    assert result.returncode == 0, result.stderr
    import charlm

    for trial in ("trial-0000", "trial-0001"):
        model = charlm.load(tmp_path / "out" / trial)
        assert model.kind.unit == "lines" and model.config.data.mode == "lines"
        assert all("\n" not in line for line in model.lines(5, seed=0))
