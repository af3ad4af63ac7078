"""Lines mode: a file that is a list (names, titles, tweets), one example per non-empty line.

Each line is read as ``<line> c1 c2 … cn <line>``: the model sees the start marker and predicts
the first character, and the loss counts the end marker too (as makemore does), so a model learns
where items end. Batches hold whole lines, padded on the right to the longest line of the batch;
padded targets are ``IGNORE`` and drop out of the loss, and since padding only ever follows a
line's last character and the state starts fresh for every line, padding never reaches a real
position (the equivalent of packed sequences, without the packing). Lines of similar length are
batched together so that little is padded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from charlm.data import MARKER, Vocab
from charlm.errors import CharlmError

IGNORE = -100  # target id that cross_entropy leaves out
BUCKET_BATCHES = 50  # lines are sorted by length within windows of this many batches


@dataclass
class Lines:
    """Lines as token ids back to back: line ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``."""

    tokens: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def line(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def subset(self, indices: np.ndarray) -> "Lines":
        parts = [self.line(int(i)) for i in indices]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in parts])
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=self.tokens.dtype)
        return Lines(tokens=tokens, offsets=offsets)

    def texts(self, vocab: Vocab) -> list[str]:
        return [vocab.decode(self.line(i)) for i in range(len(self))]


def lines_vocab(stream_vocab: Vocab) -> Vocab:
    """The vocabulary of lines mode: the marker (id 0), then the text's characters but line breaks."""
    return Vocab([MARKER] + [c for c in stream_vocab.chars if c not in "\n\r" and c != MARKER])


def split_into_lines(stream: np.ndarray, stream_vocab: Vocab, vocab: Vocab) -> Lines:
    """Cut a token stream (ids of ``stream_vocab``) at its line breaks into ``vocab``'s ids.

    A ``\\r`` before ``\\n`` goes with the break; lines empty after that are dropped.
    """
    stream = np.asarray(stream)
    newline = stream_vocab.index.get("\n")
    ends = np.flatnonzero(stream == newline) if newline is not None else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(stream)]])
    carriage = stream_vocab.index.get("\r")
    if carriage is not None:  # Windows line ends: drop the \r before each break
        trailing = (stops > starts) & (stream[np.maximum(stops - 1, 0)] == carriage)
        stops = stops - trailing
    keep = stops > starts
    starts, stops = starts[keep], stops[keep]
    # Map stream ids to lines ids; characters the vocabulary lacks (another file's) are left out.
    table = np.array([vocab.index.get(ch, -1) for ch in stream_vocab.chars], dtype=np.int64)
    pieces = [piece[piece >= 0] for piece in (table[stream[a:b]] for a, b in zip(starts, stops))]
    pieces = [piece for piece in pieces if len(piece)]
    if not pieces:
        raise CharlmError("the text has no non-empty lines: lines mode needs one example per line")
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(piece) for piece in pieces])
    return Lines(tokens=np.concatenate(pieces).astype(vocab.dtype), offsets=offsets)


HINT_CHARS = 1 << 22  # 4M characters: thousands of lines of any list


def looks_like_a_list(stream: np.ndarray, stream_vocab: Vocab) -> tuple[int, int] | None:
    """(lines, median length) when a text reads like a list — many short lines, almost no blank ones
    (a play or prose has blank lines between speeches and paragraphs) — else None. Only the first
    HINT_CHARS characters are read: a list shows in its first lines, and scanning a whole memory-mapped
    text pages all of it in (`make bench`'s 1 GB text peaked at 2.4 GB RSS that way)."""
    newline = stream_vocab.index.get("\n")
    if newline is None:
        return None
    stream = stream[:HINT_CHARS]
    ends = np.flatnonzero(np.asarray(stream) == newline)
    lengths = np.diff(np.concatenate([[-1], ends, [len(stream)]])) - 1
    lengths = lengths[:-1] if lengths[-1] == 0 else lengths  # a final newline ends the last line
    if len(lengths) < 100:
        return None
    median = int(np.median(lengths))
    if np.mean(lengths == 0) < 0.02 and 0 < median <= 60:
        return len(lengths), median
    return None


@dataclass
class LineSplits:
    train: Lines
    val: Lines
    test: Lines
    duplicates: int  # held-out lines that also appear in train


def split_lines(lines: Lines, val_fraction: float, test_fraction: float, seed: int,
                holdout_cap: int | None = None) -> LineSplits:
    """Hold out whole lines: a seeded shuffle, then test, val and the rest for training.

    ``holdout_cap`` limits each held-out part to that many lines (makemore's test split is
    min(1000, 10 %)). Held-out lines that also occur in train are counted, not removed.
    """
    order = np.random.default_rng(seed).permutation(len(lines))

    def size(fraction: float) -> int:
        count = int(round(len(lines) * fraction))
        return min(count, holdout_cap) if holdout_cap is not None else count

    n_test, n_val = size(test_fraction), size(val_fraction)
    if len(lines) - n_test - n_val < 1:
        raise CharlmError(f"only {len(lines)} lines: too few to hold out val and test lines; give more lines"
                          " or lower data.val_fraction / data.test_fraction")
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    splits = LineSplits(train=lines.subset(train), val=lines.subset(val), test=lines.subset(test), duplicates=0)
    seen = {splits.train.line(i).tobytes() for i in range(len(splits.train))}
    held = [part.line(i).tobytes() for part in (splits.val, splits.test) for i in range(len(part))]
    splits.duplicates = sum(line in seen for line in held)
    return splits


def pad_batch(lines: list[np.ndarray], marker: int, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``<line> + line`` and targets ``line + <line>``, right-padded; padded targets are IGNORE.

    ``reverse`` reads each line right to left (the backward direction of a bidirectional model).
    """
    width = max(len(line) for line in lines) + 1
    inputs = np.full((len(lines), width), marker, dtype=np.int64)
    targets = np.full((len(lines), width), IGNORE, dtype=np.int64)
    for row, line in enumerate(lines):
        ids = np.asarray(line, dtype=np.int64)[::-1] if reverse else np.asarray(line, dtype=np.int64)
        inputs[row, 1:len(ids) + 1] = ids
        targets[row, :len(ids)] = ids
        targets[row, len(ids)] = marker
    return inputs, targets


class LineBatches:
    """Training batches of ``batch_size`` whole lines, a seeded new order every epoch.

    Each epoch shuffles the lines, sorts them by length within windows of ``BUCKET_BATCHES``
    batches (so a batch holds similar lengths) and shuffles the batches; step ``k``'s batch is a
    function of ``k`` alone, so a resumed run reads exactly what an unbroken one would.
    """

    def __init__(self, lines: Lines, batch_size: int, marker: int, seed: int = 0, reverse: bool = False):
        if len(lines) < batch_size:
            raise CharlmError(f"the training split has {len(lines):,} lines, fewer than batch_size {batch_size}:"
                              " lower --batch-size or give more lines")
        self.lines = lines
        self.batch_size = batch_size
        self.marker = marker
        self.seed = seed
        self.reverse = reverse
        self.steps_per_epoch = len(lines) // batch_size
        self.tokens_per_step = int(round(float(lines.lengths.mean() + 1) * batch_size))  # targets, on average

    @functools.lru_cache(maxsize=2)
    def _epoch(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lines))[: self.steps_per_epoch * self.batch_size]
        lengths = self.lines.lengths[order]
        window = self.batch_size * BUCKET_BATCHES
        for start in range(0, len(order), window):
            part = slice(start, start + window)
            order[part] = order[part][np.argsort(lengths[part], kind="stable")]
        batches = order.reshape(self.steps_per_epoch, self.batch_size)
        return batches[rng.permutation(self.steps_per_epoch)]

    def position(self, step: int) -> tuple[int, int]:
        return divmod(step, self.steps_per_epoch)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, index = self.position(step)
        rows = self._epoch(epoch)[index]
        return pad_batch([self.lines.line(int(i)) for i in rows], self.marker, self.reverse)


def line_batches(lines: Lines, batch_size: int, marker: int, reverse: bool = False
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every line once, in batches of similar length (for evaluation)."""
    order = np.argsort(lines.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield pad_batch([lines.line(int(i)) for i in order[start:start + batch_size]], marker, reverse)
