"""charlm/inspection/text.py: per-character surprisal, the HTML page, and finding hidden units."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from charlm.data.lines import LineData
from charlm.data.stream import StreamData
from charlm.data.vocab import MARKER, Vocab
from charlm.inspection.text import feature_values, rank_units, render_html, trace
from charlm.model.network import CharRNN


class _Spans(HTMLParser):
    """Collects the text of every character span and checks that tags nest and close."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.chars: list[str] = []
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.extend(attrs)
        if tag != "meta":
            self.stack.append(tag)
        if tag == "span" and "c" in dict(attrs).get("class", "").split():
            self.chars.append("")

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "span":
            self.chars[-1] += data


def _model(vocab_size: int, cell: str = "lstm", seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(vocab_size, cell=cell, hidden_size=16, embedding_size=8, num_layers=2).eval()


def test_surprisal_is_the_models_own_log_probability():
    text = "the cat sat on the mat. the dog sat on the log.\n" * 3
    vocab = Vocab(sorted(set(text)))
    model = _model(len(vocab))
    result = trace(model, vocab, StreamData, text)
    with torch.no_grad():
        ids = torch.from_numpy(vocab.encode(text).astype(np.int64))
        logits, _ = model(ids[None])
        expected = -torch.log_softmax(logits[0, :-1].double(), dim=1).gather(1, ids[1:, None])
    assert np.isnan(result.surprisal[0])  # nothing predicts a stream's first character
    np.testing.assert_allclose(result.surprisal[1:], expected[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    assert all(len(top) == 5 and top[0][1] >= top[-1][1] for top in result.top[1:])
    assert result.states.shape == (len(text), 2, 16)


def test_in_lines_mode_a_line_break_is_the_end_marker_and_lines_start_fresh():
    vocab = Vocab([MARKER] + sorted(set("annabob")))
    model = _model(len(vocab), cell="gru")
    result = trace(model, vocab, LineData, "anna\nbob\n")
    assert not np.isnan(result.surprisal).any()  # the start marker predicts every first character
    with torch.no_grad():
        logits, _ = model(torch.tensor([[vocab.marker, *vocab.encode("bob").tolist()]]))
    log_probs = torch.log_softmax(logits[0].double(), dim=1)
    ids = [*vocab.encode("bob").tolist(), vocab.marker]
    np.testing.assert_allclose(result.surprisal[5:], [-log_probs[i, t].item() for i, t in enumerate(ids)], rtol=1e-4)


def test_the_page_is_valid_self_contained_and_has_one_element_per_character():
    text = 'He said "<b>&amp;</b>"\n\tthen left.\nä ß — 🙂\n'
    vocab = Vocab(sorted(set(text) - {"🙂"}))  # one character the model does not know
    model = _model(len(vocab))
    result = trace(model, vocab, StreamData, text)
    for page in (render_html(result, "a <test>"), render_html(result, "unit", unit=(1, 3))):
        parser = _Spans()
        parser.feed(page)
        parser.close()
        assert parser.stack == []  # every element closed
        assert parser.chars == list(text)  # one element per character, in order, the text unchanged
        assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
        assert not any(name in ("src", "href") for name, _ in parser.attributes)
        assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert "no prediction" in page  # the first and the unknown character


def test_find_units_finds_a_planted_unit():
    rng = np.random.default_rng(0)
    pieces = []
    for _ in range(200):
        word = "".join(rng.choice(list("abcdefg"), size=rng.integers(1, 6)))
        pieces.append(f"({word})" if rng.random() < 0.4 else word)
    text = " ".join(pieces)
    vocab = Vocab(sorted(set(text)))
    torch.manual_seed(0)
    model = CharRNN(len(vocab), cell="rnn_tanh", hidden_size=8, embedding_size=len(vocab), num_layers=1).eval()
    with torch.no_grad():
        model.embedding.weight.copy_(torch.eye(len(vocab)))  # one-hot inputs
        planted = 5  # a latch: '(' pushes it to +1, ')' to -1, and it holds its value in between
        model.rnn.weight_hh_l0[planted].zero_()
        model.rnn.weight_hh_l0[:, planted] = 0.0  # the other units do not read it (or they would echo it)
        model.rnn.weight_hh_l0[planted, planted] = 3.0
        model.rnn.weight_ih_l0[planted].zero_()
        model.rnn.weight_ih_l0[planted, vocab.index["("]] = 6.0
        model.rnn.weight_ih_l0[planted, vocab.index[")"]] = -6.0
        model.rnn.bias_ih_l0[planted] = model.rnn.bias_hh_l0[planted] = 0.0
    values, description = feature_values(text, "parens")
    assert description == "inside parentheses"
    ranking = rank_units(trace(model, vocab, StreamData, text), values)
    assert (ranking[0].layer, ranking[0].unit) == (0, planted)
    # Not 1: the closing parenthesis is inside the match but already switches the unit off.
    assert ranking[0].correlation > 0.8 and abs(ranking[1].correlation) < 0.5


def test_features_by_name_and_by_pattern():
    values, _ = feature_values('a "bc" d\nef', "quotes")
    assert values.tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    values, _ = feature_values("ab\ncde", "line-position")
    assert values.tolist() == [0, 1, 2, 0, 1, 2]
    values, description = feature_values("x1y22", r"\d+")
    assert values.tolist() == [0, 1, 0, 1, 1] and "\\d+" in description


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from charlm.config import build_config
    from charlm.train import train
    from tests.conftest import make_text

    folder = tmp_path_factory.mktemp("inspect")
    path = folder / "text.txt"
    path.write_text(make_text(8_000))
    settings = {"model.size": "fixed", "train.precision": "fp32", "model.hidden_size": 24, "model.num_layers": 1, "model.cell": "lstm", "train.batch_size": 8,
                "train.seq_len": 32, "train.max_steps": 30, "train.max_epochs": None, "train.eval_interval": 30,
                "train.threads": 1, "train.device": "cpu", "train.sample_length": 0, "train.warmup_steps": 0}
    train(build_config(None, list(settings.items())), path, folder / "run", progress=False)
    return folder / "run", path


def _charlm(*args):
    from tests.conftest import charlm_cli

    return charlm_cli(*args)


def test_cli_page_unit_page_and_find_units(trained_run, tmp_path):
    run, path = trained_run
    result = _charlm("inspect", "text", run, path, "-o", tmp_path / "page.html", "--max-chars", "500")
    assert result.returncode == 0, result.stderr
    parser = _Spans()
    parser.feed((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert "".join(parser.chars) == path.read_text()[:500]

    result = _charlm("inspect", "text", run, path, "--find-units", "line-start", "--top", "3", "--state", "c",
                     "-o", tmp_path / "best.html", "--max-chars", "800")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert len(rows) == 3 and all(len(row) == 4 and 0 <= int(row[2]) < 24 for row in rows)
    assert f"unit {rows[0][2]} of layer 0" in (tmp_path / "best.html").read_text(encoding="utf-8")

    for args, message in [
        (["--cell", "99", "-o", tmp_path / "x.html"], "--cell 99 is out of range: layer 0 has units 0 to 23"),
        (["--find-units", "(unclosed"], "is not a valid regular expression"),
        ([], "nothing to do"),
        (["--cell", "1", "--state", "c", "--layer", "3", "-o", tmp_path / "x.html"], "--layer 3 is out of range"),
    ]:
        result = _charlm("inspect", "text", run, path, *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
