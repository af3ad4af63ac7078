import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.data import MARKER, Vocab
from charlm.errors import CharlmError
from charlm.lines import IGNORE, LineBatches, line_batches, lines_vocab, pad_batch, split_into_lines, split_lines

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
    from charlm.model import CharRNN

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


def test_too_few_lines():
    lines, vocab = _lines("a\nb")
    with pytest.raises(CharlmError, match="fewer than batch_size 8"):
        LineBatches(lines, 8, vocab.marker)
    with pytest.raises(CharlmError, match="too few to hold out"):
        split_lines(lines, 0.5, 0.5, seed=0)
