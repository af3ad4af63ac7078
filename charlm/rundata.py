"""A run's text as its model reads it: text → vocabulary → train/val/test splits, stream or lines.

Training, ``charlm eval``, the Python API and ``charlm inspect`` all take a run's data from
``RunData.read``, so they cut the same splits the same way: in stream mode the contiguous split of
``charlm.data.split_tokens`` or, for many files, whole files held out (``charlm.documents``), in
lines mode the seeded whole-line split of ``charlm.lines.split_lines``. ``encode_file`` reads any
other file as a given model would.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm.config import DataConfig
from charlm.data import StreamBatches, TokenFile, Vocab, load_tokens, split_tokens
from charlm.documents import DocumentTokens, TextSource, load_documents
from charlm.errors import CharlmError
from charlm.lines import LineBatches, Lines, LineSplits, lines_vocab, looks_like_a_list, split_into_lines, split_lines

SPLITS = ("train", "val", "test")


@dataclass
class Encoded:
    """A whole file as a model with ``vocab`` reads it."""

    data: np.ndarray | Lines
    vocab: Vocab
    sha256: str
    unknown: int  # characters left out because the vocabulary lacks them


def encode_file(path: str | Path, mode: str, vocab: Vocab | None = None, encoding: str = "utf-8",
                cache_dir: str | None = None, progress: bool = False) -> Encoded:
    """The file's tokens (``mode`` "stream") or its lines ("lines") in ``vocab``'s ids; without a
    vocabulary, in the file's own (in lines mode: the line marker, then its characters but line breaks)."""
    if mode == "stream":
        tokens = load_tokens(path, encoding, cache_dir, vocab=vocab, progress=progress)
        return Encoded(tokens.tokens, tokens.vocab, tokens.sha256, tokens.unknown)
    # Lines are cut from the file's own token stream, then mapped to the model's vocabulary.
    own = load_tokens(path, encoding, cache_dir, progress=progress)
    target = vocab or lines_vocab(own.vocab)
    return Encoded(split_into_lines(own.tokens, own.vocab, target), target, own.sha256, _left_out(own, target))


def _left_out(own: TokenFile | DocumentTokens, vocab: Vocab) -> int:
    """How many characters of a file the lines vocabulary ``vocab`` lacks (line breaks are not characters there)."""
    lacking = [i for i, ch in enumerate(own.vocab.chars) if ch not in vocab.index and ch not in "\n\r"]
    if not lacking:
        return 0
    counts = np.bincount(np.asarray(own.tokens), minlength=len(own.vocab))
    return int(counts[lacking].sum())


def encode_documents(source: TextSource, config: DataConfig, vocab: Vocab | None = None,
                     progress: bool = False) -> tuple[Encoded, DocumentTokens]:
    """Many files as a model with ``vocab`` (None: their own characters) reads them; see ``charlm.documents``."""
    split = "contiguous" if config.mode == "lines" else config.split  # lines mode holds out lines
    documents = load_documents(source, config.mode, split, config.val_fraction, config.test_fraction, config.split_seed,
                               config.encoding, config.cache_dir, vocab, progress)
    if config.mode == "stream":
        return Encoded(documents.tokens, documents.vocab, documents.sha256, documents.unknown), documents
    target = vocab or lines_vocab(documents.vocab)
    lines = split_into_lines(documents.tokens, documents.vocab, target)
    return Encoded(lines, target, documents.sha256, _left_out(documents, target)), documents


class RunData:
    """The text a run trains on, its vocabulary, and its splits (cut when first asked for)."""

    def __init__(self, source: TextSource, config: DataConfig, encoded: Encoded,
                 documents: DocumentTokens | None = None):
        self.source = source
        self.config = config
        self.mode = config.mode
        self.vocab = encoded.vocab
        self.sha256 = encoded.sha256
        self.unknown = encoded.unknown
        self.whole = encoded.data
        self.documents = documents  # many files: what was read, skipped and held out; None for one file

    @classmethod
    def read(cls, source: "TextSource | str | Path", config: DataConfig, vocab: Vocab | None = None,
             progress: bool = False) -> "RunData":
        """Read ``source`` (a file, or many: see ``charlm.documents``) as ``config`` says, in ``vocab``
        (a run's own) or else the text's own characters."""
        source = TextSource.of(source, config.include, config.exclude)
        single = source.single_file
        if single is None:
            return cls(source, config, *encode_documents(source, config, vocab, progress))
        if config.split == "documents":
            raise CharlmError(f"data.split=documents holds out whole files, and {single} is one file: give several"
                              " files or a folder, or use --set data.split=contiguous")
        return cls(source, config, encode_file(single, config.mode, vocab, config.encoding, config.cache_dir, progress))

    def size_bytes(self) -> int:
        """How large the text is on disk (all its files)."""
        if self.documents is not None:
            return sum(entry.size for entry in self.documents.entries)
        return self.source.single_file.stat().st_size

    def split_counts(self) -> dict[str, dict[str, int]] | None:
        """Many files: the files and characters of each split (see ``DocumentTokens.counts``)."""
        return self.documents.counts() if self.documents is not None else None

    def describe_files(self) -> str:
        """e.g. "412 files (370 train / 42 val), " for many files; "" for one."""
        counts = self.split_counts()
        if counts is None:
            return ""
        held = " / ".join(f"{counts[name]['files']:,} {name}" for name in ("train", "val", "test") if counts[name]["files"])
        return f"{sum(c['files'] for c in counts.values()):,} files ({held}), "

    @property
    def unit(self) -> str:
        return "lines" if self.mode == "lines" else "chars"

    @functools.cached_property
    def _splits(self) -> tuple[np.ndarray | Lines, np.ndarray | Lines, np.ndarray | Lines, int]:
        c = self.config
        if self.mode == "lines":
            parts: LineSplits = split_lines(self.whole, c.val_fraction, c.test_fraction, c.split_seed, c.holdout_cap)
            return parts.train, parts.val, parts.test, parts.duplicates
        if self.documents is not None and self.documents.bounds is not None:  # whole files held out
            val_start, test_start = self.documents.bounds
            return self.whole[:val_start], self.whole[val_start:test_start], self.whole[test_start:], 0
        parts = split_tokens(self.whole, c.val_fraction, c.test_fraction)
        return parts.train, parts.val, parts.test, 0

    def split(self, name: str) -> np.ndarray | Lines:
        """The train, val or test part: token ids (views of the cache, no copies) or whole lines."""
        return self._splits[SPLITS.index(name)]

    @property
    def train(self) -> np.ndarray | Lines:
        return self.split("train")

    @property
    def val(self) -> np.ndarray | Lines:
        return self.split("val")

    @property
    def duplicates(self) -> int:
        """Lines mode: held-out lines that also occur in train (counted, not removed)."""
        return self._splits[3]

    def tokens(self, part: np.ndarray | Lines) -> int:
        """How many characters a model predicts on ``part`` (lines mode: every line's end marker too)."""
        return int(part.lengths.sum()) + len(part) if isinstance(part, Lines) else max(len(part) - 1, 0)

    def mean_line_length(self) -> float | None:
        """Lines mode: the mean length of a training line, end marker included (None in stream mode)."""
        return float(self.train.lengths.mean()) + 1 if self.mode == "lines" else None

    def eval_split(self, max_chars: int | None) -> np.ndarray | Lines | None:
        """What evaluations during training read: the val split, in stream mode its first
        ``max_chars`` (the same prefix every time, so evaluations on a huge text stay seconds long and
        compare); None when too little is held out to evaluate."""
        val = self.val if self.mode == "lines" or max_chars is None else self.val[:max_chars]
        return val if len(val) >= (1 if self.mode == "lines" else 2) else None

    def batches(self, batch_size: int, seq_len: int, seed: int, direction: str) -> StreamBatches | LineBatches:
        """Training batches for one direction: ``batch_size`` contiguous streams in ``seq_len``
        windows, or batches of whole lines. The backward direction reads the text reversed: its
        streams run from the end of the text towards the start (each line right to left), so the
        state it carries into a window comes from the text after it."""
        backward = direction == "backward"
        if self.mode == "lines":
            return LineBatches(self.train, batch_size, self.vocab.marker, seed, reverse=backward)
        return StreamBatches(self.train[::-1] if backward else self.train, batch_size, seq_len, seed)

    def list_hint(self) -> tuple[int, int] | None:
        """(lines, median length) when a text trained in stream mode reads like a list, else None."""
        return looks_like_a_list(self.whole, self.vocab) if self.mode == "stream" else None
