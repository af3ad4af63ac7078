
import pytest

from charlm.errors import CharlmError
from charlm.sweep import describe, load_sweep
from tests.sweep.test_sweep import FAST, _sweep_file, text  # noqa: F401  (text: the fixture)

GRID4 = "method: grid\nparameters:\n  model.cell: {values: [gru, lstm]}\n  train.lr: {values: [0.003, 0.01]}\n"


def test_a_grid_is_every_combination_and_its_size_is_the_trial_count(tmp_path, text):
    spec = load_sweep(_sweep_file(tmp_path, text, GRID4))
    assert spec.trials == 4 and spec.name == "sweep"
    assert spec.grid() == [{"model.cell": c, "train.lr": lr} for c in ("gru", "lstm") for lr in (0.003, 0.01)]
    assert spec.base.train.max_steps == 20 and spec.base.model.hidden_size == 16  # set: applies to every trial
    shown = describe(spec)
    assert shown.count("  - model.cell=") == 4 and f"text: {text}" in shown


def test_ranges_are_described_and_int_ranges_can_be_a_grid(tmp_path, text):
    body = ("method: random\ntrials: 5\nparameters:\n  train.lr: {distribution: log_uniform, min: 1.0e-4, max: 0.01}\n"
            "  train.log_interval: {distribution: int, min: 1, max: 3}\n")
    spec = load_sweep(_sweep_file(tmp_path, text, body))
    assert spec.trials == 5 and "train.lr: log-uniform in [0.0001, 0.01]" in describe(spec)
    grid = load_sweep(_sweep_file(tmp_path, text, "method: grid\nparameters:\n"
                                                   "  train.log_interval: {distribution: int, min: 1, max: 3}\n"))
    assert grid.trials == 3 and grid.workers == 1  # one at a time unless the file or --workers says
    parallel = load_sweep(_sweep_file(tmp_path, text, "method: grid\nworkers: 2\nparameters:\n"
                                                       "  model.cell: {values: [gru, lstm]}\n"))
    assert parallel.workers == 2


@pytest.mark.parametrize("body, message", [
    ("method: grid\nparameter:\n  model.cell: {values: [gru]}\n", "unknown key 'parameter' (did you mean 'parameters'?)"),
    ("method: grd\nparameters:\n  model.cell: {values: [gru]}\n", "method must be one of grid, random, tpe, got 'grd'"),
    ("method: grid\nparameters:\n  model.hiden_size: {values: [8]}\n", "did you mean 'model.hidden_size'"),
    ("method: grid\nparameters:\n  model.cell: {values: [gru, lstn]}\n", "parameters.model.cell = 'lstn'"),
    ("method: grid\nparameters:\n  model.cell: {values: []}\n", "must be a non-empty list"),
    ("method: grid\nparameters:\n  train.lr: {distribution: uniform, min: 0.001, max: 0.01}\n", "a grid needs a list"),
    ("method: random\nparameters:\n  model.dropout: {distribution: uniform, min: 0.0, max: 1.0}\n",
     "model.dropout must be in [0, 1)"),
    ("method: random\nparameters:\n  train.lr: {distribution: log_uniform, min: 0, max: 0.01}\n", "needs min > 0"),
    ("method: random\nparameters:\n  train.lr: {distribution: uniform, min: 0.01, max: 0.001}\n",
     "min (0.01) must be below max (0.001)"),
    ("method: random\nparameters:\n  train.lr: {distribution: loguniform, min: 1.0e-4, max: 0.01}\n",
     "did you mean 'log_uniform'"),
    ("method: random\nparameters:\n  train.log_interval: {distribution: int, min: 1, max: 2.5}\n",
     "max must be a whole number"),
    ("method: random\ntrials: 0\nparameters:\n  model.cell: {values: [gru]}\n", "trials must be a whole number >= 1"),
    ("method: grid\nworkers: two\nparameters:\n  model.cell: {values: [gru]}\n", "workers must be a whole number >= 1"),
    ("method: grid\nheartbeat: 0\nparameters:\n  model.cell: {values: [gru]}\n", "heartbeat must be a whole number >= 1"),
    ("method: grid\nheartbeat: 2.5\nparameters:\n  model.cell: {values: [gru]}\n", "heartbeat must be a whole number"),
    ("method: tpe\npruner: medain\nparameters:\n  model.cell: {values: [gru]}\n", "did you mean 'median'"),
    ("method: tpe\n", "parameters must map config keys"),
    ("method: tpe\nparameters:\n  train.max_steps: {values: [5]}\n", "train.max_steps is both in set: and in parameters"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_invalid_sweep_files_are_one_line_errors(tmp_path, text, body, message):
    path = _sweep_file(tmp_path, text, body) if not body.startswith("-") else tmp_path / "list.yaml"
    if body.startswith("-"):
        path.write_text(body)
    with pytest.raises(CharlmError) as info:
        load_sweep(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_example_sweeps_are_valid():
    from pathlib import Path

    examples = sorted(Path("configs/sweeps").glob("*.yaml"))
    measured = sorted(Path("configs/sweeps/auto").glob("*.yaml"))  # bench/auto_measure.py's, behind docs/auto.md
    assert len(examples) >= 3 and len(measured) >= 20
    for path in examples + measured:
        spec = load_sweep(path)
        assert spec.parameters and spec.trials >= 1, path
