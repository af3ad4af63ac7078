import csv

from charlm.sweep import TrialRow, load_sweep, results_table, write_results
from tests.sweep.test_sweep import GRID, _sweep_file, text  # noqa: F401  (text: the fixture)


def _rows(tmp_path):
    return [
        TrialRow(1, {"model.cell": "lstm", "train.lr": 0.01}, 1.5, 200, 61.0, 120_000, "COMPLETE",
                 str(tmp_path / "trial-0001")),
        TrialRow(0, {"model.cell": "gru", "train.lr": 0.003}, 1.75, 200, 60.0, 90_000, "COMPLETE",
                 str(tmp_path / "trial-0000")),
        TrialRow(2, {"model.cell": "gru", "train.lr": 0.01}, None, 40, 12.0, None, "PRUNED", ""),
        TrialRow(3, {"model.cell": "lstm", "train.lr": 0.003}, None, None, None, None, "FAIL", "", error="out of text"),
    ]


def test_the_table_csv_and_best_link(tmp_path, text):
    spec = load_sweep(_sweep_file(tmp_path, text, GRID))
    rows = _rows(tmp_path)
    rows[1].host, rows[1].directory = "elsewhere", "/far/away/trial-0000"  # run by another machine
    table = results_table(rows, spec, tmp_path).splitlines()
    assert table[0].split() == ["trial", "model.cell", "train.lr", "best", "val", "loss", "steps", "time", "params",
                                "state", "host", "directory"]
    assert table[1].split() == ["1", "lstm", "0.01", "1.5000", "200", "1m01s", "0.12M", "complete", "-", "trial-0001"]
    assert table[2].split()[-2:] == ["elsewhere", "/far/away/trial-0000"]
    assert table[3].split() == ["2", "gru", "0.01", "-", "40", "12s", "-", "pruned", "-", "-"]
    (tmp_path / "trial-0001").mkdir()
    write_results(rows, spec, tmp_path)
    with open(tmp_path / "results.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [r["state"] for r in written] == ["complete", "complete", "pruned", "fail"]
    assert float(written[0]["best_val_loss"]) == 1.5 and written[2]["best_val_loss"] == ""
    assert (tmp_path / "best").resolve() == (tmp_path / "trial-0001").resolve()
    rows[0].host, rows[0].directory = "elsewhere", "/far/away/trial-0001"  # the best ran where this machine cannot see
    write_results(rows, spec, tmp_path)
    assert (tmp_path / "best.txt").read_text() == "elsewhere:/far/away/trial-0001\n"


def test_each_outcome_is_one_line(tmp_path):
    completed, _, pruned, failed = _rows(tmp_path)
    assert completed.outcome() == "best val loss 1.5000 (1m01s)"
    assert pruned.outcome() == "pruned at step 40 (12s)"
    assert failed.outcome() == "failed: out of text"
