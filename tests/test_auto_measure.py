"""bench/auto_measure.py: a sweep run today replaces only its own section of docs/auto.md."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import auto_measure  # noqa: E402


@pytest.fixture
def doc(tmp_path, monkeypatch):
    """A copy of the repository's docs/auto.md and sweep names, with auto_measure writing into the copy."""
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "auto.md"
    target.write_text((ROOT / "docs" / "auto.md").read_text())
    monkeypatch.setattr(auto_measure, "ROOT", tmp_path)
    return target


def _results(out_dir: Path, name: str, loss: str) -> None:
    (out_dir / name).mkdir(parents=True)
    (out_dir / name / "machine.txt").write_text("2030-01-01, Some CPU, 2 CPUs (avx2)\n")
    with open(out_dir / name / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "model.dropout", "best_val_loss", "steps", "seconds", "parameters", "state"])
        writer.writerow([0, 0.3, loss, 100, 600, 1_000_000, "complete"])


def test_a_new_result_replaces_its_own_section_and_keeps_every_other(doc, tmp_path):
    original = doc.read_text()
    before = auto_measure.sections(original.partition(auto_measure.BEGIN)[2].partition(auto_measure.END)[0])
    _results(tmp_path / "out", "ts-10m-1024", "1.2345")
    auto_measure.collect(tmp_path / "out")
    text = doc.read_text()
    after = auto_measure.sections(text.partition(auto_measure.BEGIN)[2].partition(auto_measure.END)[0])
    assert "| 0.3 | 1.2345 | 100 | 1.00M |" in after["ts-10m-1024"]
    assert "Ran 2030-01-01, Some CPU, 2 CPUs (avx2)." in after["ts-10m-1024"]
    assert set(after) == set(auto_measure.sweep_names())  # a section for every sweep file, no other
    for name in set(before) - {"ts-10m-1024"}:
        assert after[name] == before[name], name
    assert text.partition(auto_measure.BEGIN)[0] == original.partition(auto_measure.BEGIN)[0]  # the prose stays
    assert text.partition(auto_measure.END)[2] == original.partition(auto_measure.END)[2]


def test_every_sweep_file_has_a_section_in_the_docs():
    text = (ROOT / "docs" / "auto.md").read_text()
    found = auto_measure.sections(text.partition(auto_measure.BEGIN)[2].partition(auto_measure.END)[0])
    assert set(auto_measure.sweep_names()) <= set(found)
