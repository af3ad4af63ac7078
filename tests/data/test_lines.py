import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.data.lines import (IGNORE, LineBatches, LineData, line_batches, lines_vocab, pad_batch, split_into_lines,
                               split_lines)
from charlm.data.vocab import MARKER, Vocab
from charlm.errors import CharlmError

NAMES = "emma\nolivia\r\nava\n\nisabella\nsophia\nmia\n  \ncharlotte\namelia\nava"


def _lines(text=NAMES):
    stream_vocab = Vocab.from_text(text)
    vocab = lines_vocab(stream_vocab)
    return split_into_lines(stream_vocab.encode(text), stream_vocab, vocab), vocab


def test_lines_are_cut_at_breaks_without_empty_ones_or_carriage_returns():
    lines, vocab = _lines()
    assert vocab.chars[0] == MARKER and vocab.marker == 0 and "\n" not in vocab.chars and "\r" not in vocab.chars
    assert lines.texts(vocab) == ["emma", "olivia", "ava", "isabella", "sophia", "mia", "  ", "charlotte", "amelia",
                                  "ava"]
    assert vocab.decode([0, *vocab.encode("ava"), 0]) == "ava"  # the marker is never printed


def test_split_holds_out_whole_lines_and_reports_duplicates():
    lines, vocab = _lines()
    splits = split_lines(lines, 0.2, 0.2, seed=3)
    parts = [splits.train.texts(vocab), splits.val.texts(vocab), splits.test.texts(vocab)]
    assert sorted(sum(parts, [])) == sorted(lines.texts(vocab))  # every line once, none cut
    assert [len(p) for p in parts] == [6, 2, 2]
    assert splits.duplicates == sum(t in parts[0] for t in parts[1] + parts[2])
    capped = split_lines(lines, 0.2, 0.2, seed=3, holdout_cap=1)
    assert (len(capped.val), len(capped.test)) == (1, 1)
    assert split_lines(lines, 0.2, 0.2, seed=3).val.texts(vocab) == parts[1]  # seeded


def test_padding_never_changes_the_loss():
    torch.manual_seed(0)
    from charlm.config import ModelConfig
    from charlm.model.network import CharRNN

    lines, vocab = _lines()
    model = CharRNN.from_config(ModelConfig(cell="lstm", hidden_size=16, num_layers=2), len(vocab)).eval()

    def losses(batch):
        inputs, targets = pad_batch(batch, vocab.marker)
        logits, _ = model(torch.from_numpy(inputs))
        per_token = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(targets).flatten(), reduction="none",
                                    ignore_index=IGNORE).view(targets.shape)
        return (per_token.sum(1) / (torch.from_numpy(targets) != IGNORE).sum(1)).tolist()

    every = [lines.line(i) for i in range(len(lines))]
    together = losses(every)
    alone = [losses([line])[0] for line in every]
    assert together == pytest.approx(alone, rel=1e-5)


def test_batches_hold_whole_lines_of_similar_length_and_repeat_by_step():
    text = "\n".join("x" * (1 + i % 17) for i in range(400))
    lines, vocab = _lines(text)
    batches = LineBatches(lines, 8, vocab.marker, seed=1)
    assert batches.steps_per_epoch == 50
    seen = []
    for step in range(batches.steps_per_epoch):
        inputs, targets = batches.batch(step)
        assert (inputs[:, 0] == vocab.marker).all()
        lengths = (targets != IGNORE).sum(1) - 1
        seen += lengths.tolist()
        assert lengths.max() - lengths.min() <= 3  # bucketed
    assert sorted(seen) == sorted(lines.lengths.tolist())  # an epoch reads every line once
    assert batches.starts_fresh(1)  # every line starts from a fresh state
    again = LineBatches(lines, 8, vocab.marker, seed=1)
    assert all(np.array_equal(again.batch(s)[0], batches.batch(s)[0]) for s in (0, 7, 51))
    assert not np.array_equal(batches.batch(0)[0], batches.batch(50)[0])  # a new order next epoch


def test_reverse_reads_each_line_backwards():
    inputs, targets = pad_batch([np.array([5, 6, 7]), np.array([9])], marker=0, reverse=True)
    assert inputs.tolist() == [[0, 7, 6, 5], [0, 9, 0, 0]]
    assert targets.tolist() == [[7, 6, 5, 0], [9, 0, IGNORE, IGNORE]]


def test_evaluation_batches_cover_every_line_once():
    lines, vocab = _lines()
    count = sum(int((t != IGNORE).sum()) for _, t in line_batches(lines, 3, vocab.marker))
    assert count == int(lines.lengths.sum()) + len(lines)


def test_a_line_model_starts_each_sample_at_the_marker_and_reads_breaks_as_its_end():
    _, vocab = _lines()
    assert LineData.start_tokens(vocab, "em") == [vocab.marker, vocab.index["e"], vocab.index["m"]]
    assert LineData.opening(vocab) == [vocab.marker] and LineData.line_break(vocab) == (vocab.marker, True)
    lines, small = _lines("ab\nb")
    assert lines.as_stream().tolist() == [small.marker, *small.encode("ab").tolist(), small.marker, small.index["b"]]


def test_too_few_lines():
    lines, vocab = _lines("a\nb")
    with pytest.raises(CharlmError, match="fewer than batch_size 8"):
        LineBatches(lines, 8, vocab.marker)
    with pytest.raises(CharlmError, match="too few to hold out"):
        split_lines(lines, 0.5, 0.5, seed=0)


# ---- lines mode end to end ---------------------------------------------------------------------

def _train_list(tmp_path, lines, steps=300, **overrides):
    from charlm.config import build_config
    from charlm.train import train

    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    settings = {"model.size": "fixed", "train.precision": "fp32", "data.mode": "lines", "model.hidden_size": 48, "model.num_layers": 1, "train.batch_size": 8,
                "train.max_steps": steps, "train.max_epochs": None, "train.eval_interval": 100, "train.lr": 1e-2,
                "train.warmup_steps": 0, "train.threads": 1, "train.device": "cpu", "train.sample_length": 40,
                "data.val_fraction": 0.1, **overrides}
    config = build_config(None, list(settings.items()))
    return train(config, path, tmp_path / "run", progress=False), path


WORDS = ["apple", "banana", "cherry", "damson", "elderberry", "fig", "grape", "huckleberry", "kiwi", "lemon",
         "mango", "nectarine", "orange", "papaya", "quince", "raspberry"]


def test_a_tiny_list_is_learned_and_sampled_as_whole_lines(tmp_path):
    import charlm

    result, path = _train_list(tmp_path, WORDS * 8)
    assert result.best_val_loss < 0.5
    model = charlm.load(tmp_path / "run")
    samples = model.lines(40, temperature=0.3, seed=0)
    assert all(MARKER not in line and "\n" not in line for line in samples)
    assert sum(line in WORDS for line in samples) >= 36  # it reproduces its lines, each ending on the marker
    primed = model.lines(8, prime="ba", temperature=0.3, seed=1)
    assert all(line.startswith("ba") for line in primed) and "banana" in primed  # the prime starts each line


def test_cli_lines_sampling_novel_unique_and_eval(tmp_path):
    import json

    from tests.conftest import charlm_cli as charlm

    _train_list(tmp_path, WORDS * 8, steps=60)  # barely trained: plenty of novel lines
    run = tmp_path / "run"

    plain = charlm("sample", run, "-n", "12", "--seed", "1")
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 12 and MARKER not in plain.stdout
    novel = charlm("sample", run, "-n", "12", "--seed", "1", "--novel", "--unique")
    kept = novel.stdout.splitlines()
    assert novel.returncode == 0 and not set(kept) & set(WORDS) and len(set(kept)) == len(kept)
    assert "lines" in novel.stderr and "are not in the training set" in novel.stderr
    report = json.loads(charlm("eval", run, "--json").stdout)
    assert report["lines"] >= 1 and report["split"] == "val"
    wrong = charlm("sample", run, "--reverse")
    assert wrong.returncode == 2 and "lines-mode model" in wrong.stderr


def test_lines_mode_resumes_exactly(tmp_path):
    import torch

    from charlm.config import build_config
    from charlm.train import train
    from charlm.train.checkpoint import Checkpoint

    path = tmp_path / "list.txt"
    path.write_text("\n".join(WORDS * 8) + "\n")
    settings = {"model.size": "fixed", "train.precision": "fp32", "data.mode": "lines", "model.hidden_size": 32,
                "train.batch_size": 8,
                "train.max_epochs": None, "train.eval_interval": 10, "train.lr_schedule": "constant",
                "train.threads": 1, "train.device": "cpu", "model.dropout": 0.1, "model.num_layers": 2}
    train(build_config(None, [*settings.items(), ("train.max_steps", 30)]), path, tmp_path / "whole", progress=False)
    train(build_config(None, [*settings.items(), ("train.max_steps", 15)]), path, tmp_path / "split", progress=False)
    train(build_config(None, [*settings.items(), ("train.max_steps", 30)]), path, tmp_path / "split", resume=True,
          progress=False)
    whole, split = Checkpoint.load(tmp_path / "whole" / "last.pt"), Checkpoint.load(tmp_path / "split" / "last.pt")
    assert all(torch.equal(whole.weights[k], split.weights[k]) for k in whole.weights)


def test_a_list_is_recognised_and_a_play_is_not(tinyshakespeare):
    from charlm.data.lines import looks_like_a_list
    from charlm.data.source import read_text

    def verdict(text):
        vocab = Vocab.from_text(text)
        return looks_like_a_list(vocab.encode(text), vocab)

    assert verdict("\n".join(WORDS * 10)) == (160, int(np.median([len(w) for w in WORDS])))
    assert verdict(read_text(tinyshakespeare)[:200_000]) is None
    assert verdict("short text\n" * 50) is None  # too few lines to tell


def test_the_list_hint_reads_only_the_start_of_a_text(monkeypatch):
    """A whole memory-mapped gigabyte would be paged in by a scan: the hint stops at HINT_CHARS."""
    from charlm.data import lines

    listing = "\n".join(WORDS * 10) + "\n"
    text = listing + "a paragraph of prose\n\n" * 5_000  # blank lines after the list: prose, if read
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text)
    assert lines.looks_like_a_list(tokens, vocab) is None
    monkeypatch.setattr(lines, "HINT_CHARS", len(listing))
    assert lines.looks_like_a_list(tokens, vocab) is not None
