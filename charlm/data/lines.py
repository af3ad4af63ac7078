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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from charlm.data.base import Batch, Part, RunData, Writer, sample_options
from charlm.data.source import TextSource
from charlm.data.tokens import Joining, Tokens, read_tokens
from charlm.data.vocab import MARKER, Vocab
from charlm.errors import CharlmError

if TYPE_CHECKING:
    from charlm.config import DataConfig, SampleConfig

IGNORE = -100  # target id that cross_entropy leaves out
BUCKET_BATCHES = 50  # lines are sorted by length within windows of this many batches


@dataclass
class Lines(Part):
    """Lines as token ids back to back: line ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``; each is
    read after the marker, from a fresh state, and predicted up to its end marker."""

    tokens: np.ndarray
    offsets: np.ndarray
    marker: int = 0

    carries_state = False

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def predicted(self) -> int:
        return int(self.lengths.sum()) + len(self)

    def eval_batches(self, batch_size: int, direction: str) -> Iterator[Batch]:
        return line_batches(self, batch_size, self.marker, reverse=direction == "backward")

    def as_stream(self) -> np.ndarray:
        """Lines back to back, each preceded by the marker."""
        return np.insert(self.tokens.astype(np.int64), self.offsets[:-1], self.marker)

    def describe(self) -> dict[str, Any]:
        return {"lines": len(self)}

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
        return Lines(tokens=tokens, offsets=offsets, marker=self.marker)

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
    return Lines(tokens=np.concatenate(pieces).astype(vocab.dtype), offsets=offsets, marker=vocab.marker)


HINT_CHARS = 1 << 22  # 4M characters: thousands of lines of any list


def looks_like_a_list(stream: np.ndarray, stream_vocab: Vocab) -> tuple[int, int] | None:
    """(lines, median length) when a text reads like a list — many short lines, almost no blank ones
    (a play or prose has blank lines between speeches and paragraphs) — else None. Only the first
    HINT_CHARS characters are read: a list shows in its first lines, and scanning a whole memory-mapped
    text would page all of it into memory."""
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

    def starts_fresh(self, step: int) -> bool:
        return True  # every line does

    def batch(self, step: int) -> Batch:
        epoch, index = self.position(step)
        rows = self._epoch(epoch)[index]
        return pad_batch([self.lines.line(int(i)) for i in rows], self.marker, self.reverse)


def line_batches(lines: Lines, batch_size: int, marker: int, reverse: bool = False) -> Iterator[Batch]:
    """Every line once, in batches of similar length (for evaluation)."""
    order = np.argsort(lines.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield pad_batch([lines.line(int(i)) for i in order[start:start + batch_size]], marker, reverse)


class LineData(RunData):
    """A list: every non-empty line of the text (of every file) is one example."""

    unit = "lines"

    def __init__(self, source: TextSource, config: "DataConfig", tokens: Tokens, vocab: Vocab, unknown: int,
                 lines: Lines):
        super().__init__(source, config, tokens, vocab, unknown)
        self.lines = lines

    @classmethod
    def read(cls, source: TextSource, config: "DataConfig", vocab: Vocab | None = None,
             progress: bool = False) -> "LineData":
        tokens, lines, target, unknown = _read_lines(source, vocab, config.encoding, config.cache_dir, progress)
        return cls(source, config, tokens, target, unknown, lines)

    @classmethod
    def encode_file(cls, path: str | Path, vocab: Vocab, encoding: str = "utf-8", cache_dir: str | None = None,
                    progress: bool = False) -> tuple[Part, int]:
        _, lines, _, unknown = _read_lines(TextSource.of(path), vocab, encoding, cache_dir, progress)
        return lines, unknown

    @classmethod
    def encode_text(cls, text: str, vocab: Vocab) -> tuple[Part, int]:
        own = Vocab.from_text(text)
        lacking = sum(1 for ch in text if ch not in vocab.index and ch not in "\n\r")
        return split_into_lines(own.encode(text), own, vocab), lacking

    @functools.cached_property
    def _held_out(self) -> LineSplits:
        c = self.config
        return split_lines(self.lines, c.val_fraction, c.test_fraction, c.split_seed, c.holdout_cap)

    def _cut(self) -> tuple[Part, Part, Part]:
        return self._held_out.train, self._held_out.val, self._held_out.test

    @property
    def duplicates(self) -> int:
        """Held-out lines that also occur in train (counted, not removed)."""
        return self._held_out.duplicates

    def eval_part(self, max_chars: int | None) -> Part | None:
        """Every val line (a list's val split is small); None when there is none."""
        return self.val if len(self.val) >= 1 else None

    def batches(self, batch_size: int, seq_len: int, seed: int, direction: str) -> LineBatches:
        """Batches of whole lines; the backward direction reads each line right to left."""
        return LineBatches(self.train, batch_size, self.vocab.marker, seed, reverse=direction == "backward")

    @property
    def window_length(self) -> float:
        """A training line's mean length, end marker included: how long a batch of lines is."""
        return float(self.train.lengths.mean()) + 1

    def fine_tune_vocab(self, vocab: Vocab, extend: bool, source: str) -> Vocab:
        raise CharlmError("--init-from is not available in lines mode: train the list from scratch")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "held_out_duplicates": self.duplicates}

    def summary(self) -> str:
        also = f" ({self.duplicates:,} held-out lines also in train)" if self.duplicates else ""
        return super().summary() + also

    @staticmethod
    def start_tokens(vocab: Vocab, prime: str) -> list[int]:
        """The line marker, then the prime: the start of the line."""
        return [vocab.marker] + [vocab.index[c] for c in prime]

    @staticmethod
    def sample(sampler: Writer, prime: str, length: int, reverse: bool, **options: Any) -> str:
        """One line of at most ``length`` characters (written right to left: a text, as in stream mode)."""
        if reverse:
            return sampler.texts(prime, length, reverse=True, **options)[0]
        return sampler.lines(1, prime, length, **options)[0]

    @staticmethod
    def preview(sampler: Writer, settings: "SampleConfig", length: int, seed: int | None, lines: int) -> str:
        """``lines`` whole lines, one a line."""
        prime = settings.prime if not sampler.vocab.missing(settings.prime) else ""
        return "\n".join(sampler.lines(lines, prime, length, **sample_options(settings, seed)))

    @staticmethod
    def opening(vocab: Vocab) -> list[int]:
        return [vocab.marker]

    @staticmethod
    def line_break(vocab: Vocab) -> tuple[int | None, bool]:
        return vocab.marker, True  # a line ends on the marker, and the next starts afresh


def _read_lines(source: TextSource, vocab: Vocab | None, encoding: str, cache_dir: str | None,
                progress: bool) -> tuple[Tokens, Lines, Vocab, int]:
    """The lines of ``source`` (of all its files, joined by line breaks) in ``vocab``'s ids (None: the
    text's own lines vocabulary), cut from the text's own token stream; that vocabulary, and how many
    characters it lacks."""
    joining = None if source.single is not None else Joining("\n", before_first=False)
    tokens = read_tokens(source, encoding, cache_dir, joining=joining, progress=progress)
    target = vocab if vocab is not None else lines_vocab(tokens.vocab)
    return tokens, split_into_lines(tokens.tokens, tokens.vocab, target), target, _left_out(tokens, target)


def _left_out(own: Tokens, vocab: Vocab) -> int:
    """How many characters of a text the lines vocabulary ``vocab`` lacks (line breaks are not characters there)."""
    lacking = [i for i, ch in enumerate(own.vocab.chars) if ch not in vocab.index and ch not in "\n\r"]
    if not lacking:
        return 0
    counts = np.bincount(np.asarray(own.tokens), minlength=len(own.vocab))
    return int(counts[lacking].sum())
