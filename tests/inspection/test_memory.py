"""charlm/inspection/memory.py: the long-range memory task and its scoring."""

from __future__ import annotations

import numpy as np
import pytest

from charlm.errors import CharlmError
from charlm.inspection.memory import (ANSWERS, CUE, FILLER, KEYS, MemoryResult, make_lines, results_table,
                                      train_and_score)


@pytest.mark.parametrize("gap", [2, 3, 5, 20, 200])
def test_the_answer_is_exactly_gap_characters_after_the_key(gap):
    lines, keys = make_lines(300, gap, np.random.default_rng(gap))
    for line, key in zip(lines, keys):
        assert len(line) == gap + 2 and line.endswith("\n")
        assert line[0] == KEYS[key] and line[gap] == ANSWERS[key]  # the decision, gap characters on
        assert line[gap - 1] == CUE and line.count(CUE) == 1
        assert set(line[1:gap - 1]) <= set(FILLER)  # nothing in between gives the answer away
        assert not set(line[1:gap - 1]) & set(KEYS + ANSWERS + CUE)
    assert 0.4 < keys.mean() < 0.6


def test_gaps_below_two_are_refused():
    with pytest.raises(CharlmError, match="gaps start at 2"):
        make_lines(3, 1, np.random.default_rng(0))


def test_a_short_gap_is_learned():
    result = train_and_score("gru", 5, steps=300, hidden_size=32)
    assert result.accuracy > 0.95, result


def test_the_table_has_a_row_per_cell_and_a_column_per_gap():
    results = [MemoryResult(cell, gap, accuracy, 10, 1.0, 0.1)
               for cell, accuracy in (("rnn_tanh", 0.5), ("lstm", 1.0)) for gap in (5, 50)]
    table = results_table(results).splitlines()
    assert table[0].split() == ["cell", "gap", "5", "gap", "50"]
    assert table[1].split() == ["rnn_tanh", "50.0%", "50.0%"] and table[2].split() == ["lstm", "100.0%", "100.0%"]


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_the_plot(tmp_path):
    import json

    from tests.conftest import charlm_cli

    command = ["inspect", "memory", "--cells", "rnn_tanh,lstm", "--gaps", "3,6", "--steps", "20", "--hidden-size", "8"]
    result = charlm_cli(*command, "--workers", "2", "-o", tmp_path)  # two processes, one thread each
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["cell", "gap", "3", "gap", "6"]
    assert lines[2].startswith("rnn_tanh") and lines[3].startswith("lstm")
    report = json.loads((tmp_path / "memory.json").read_text())
    assert [(r["cell"], r["gap"]) for r in report["results"]] == [("rnn_tanh", 3), ("rnn_tanh", 6), ("lstm", 3),
                                                                   ("lstm", 6)]
    assert (tmp_path / "memory.png").read_bytes()[:4] == b"\x89PNG"
    # The same seeds give the same numbers one job at a time.
    serial = charlm_cli(*command, "--workers", "1", "-o", tmp_path / "serial", "--json")
    assert serial.returncode == 0, serial.stderr
    assert [r["accuracy"] for r in json.loads(serial.stdout)["results"]] == [r["accuracy"] for r in report["results"]]

    bad = charlm_cli("inspect", "memory", "--gaps", "1,5")
    assert bad.returncode == 2 and "gaps start at 2" in bad.stderr
