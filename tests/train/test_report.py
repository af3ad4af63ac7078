"""What a run says and writes (charlm/train/report.py)."""

from charlm.train.report import QuietReport, Report
from charlm.train.verdict import Verdicts


def test_bad_steps_are_one_warning_per_read_in_the_singular_or_plural(tmp_path, capsys):
    report = Report(tmp_path, progress=False)
    report.skips(Verdicts(skipped=1, overflows=0, run=2, longest_run=2, last_step=6, last_loss=float("nan"),
                          last_grad_norm=1.0), limit=5)
    report.skips(Verdicts(skipped=3, overflows=0, run=0, longest_run=2, last_step=40, last_loss=float("nan"),
                          last_grad_norm=1.0), limit=5)
    assert capsys.readouterr().err.splitlines() == [
        "warning: step 6 had a NaN or infinite loss or gradient; skipped its update (2 in a row; 5 in a row stop"
        " training)",
        "warning: 3 steps up to step 40 had a NaN or infinite loss or gradient; skipped their updates (at most 2 in a"
        " row; 5 in a row stop training)"]


def test_other_ranks_say_nothing_and_write_nothing(tmp_path, capsys):
    quiet = QuietReport(tmp_path)
    quiet.skips(Verdicts(1, 0, 1, 1, 3, 0.0, 0.0), limit=5)
    quiet.evaluation(None, {}, None, True)
    quiet.start(None, False)
    assert capsys.readouterr().err == "" and list(tmp_path.iterdir()) == [] and not quiet.wants_bar
