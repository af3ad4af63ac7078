"""Stream data: one long text (or many files joined), read as contiguous streams.

Where a training batch is cut: ``StreamBatches.batch``; where an evaluation's: ``eval_windows``.
Both keep ``batch_size`` contiguous streams so that the hidden state carried from one window to
the next belongs to the text that really came before it. One text is split contiguously (train,
then val, then test: for tinyshakespeare nanoGPT's 90/10 split); many files hold out whole files
(``data.split: documents``), each preceded by the document marker so the model learns where a
document starts and ends.
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
from charlm.data.tokens import Holdout, Joining, read_tokens
from charlm.data.vocab import DOCUMENT, Vocab, format_chars
from charlm.errors import CharlmError

if TYPE_CHECKING:
    from charlm.config import DataConfig, SampleConfig


@dataclass
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_tokens(tokens: np.ndarray, val_fraction: float, test_fraction: float) -> Splits:
    """Contiguous split: train first, then val, then test (views, no copies).

    With val 0.1 and test 0 this is nanoGPT's split: train = first int(0.9 n) tokens.
    """
    n = len(tokens)
    train_end = int(n * (1.0 - val_fraction - test_fraction))
    val_end = int(n * (1.0 - test_fraction))
    return Splits(train=tokens[:train_end], val=tokens[train_end:val_end], test=tokens[val_end:])


class StreamBatches:
    """``batch_size`` contiguous streams over the training tokens, read in ``seq_len`` windows.

    Stream ``b`` covers tokens ``[b * stream_len, (b + 1) * stream_len)``. Step ``k`` of an epoch
    gives every stream its window ``k``, so the state a stream ends step ``k`` with is the right
    state to start step ``k + 1`` with (truncated BPTT). At each epoch the streams are rotated
    by a seeded offset below ``seq_len`` so that window boundaries fall elsewhere; the state starts
    afresh when an epoch begins, because the streams wrap around there.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0):
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.stream_len = len(tokens) // batch_size
        self.steps_per_epoch = (self.stream_len - 1) // seq_len
        if self.steps_per_epoch < 1:
            need = batch_size * (seq_len + 1)
            raise CharlmError(
                f"the training split has {len(tokens):,} characters, too few for batch_size {batch_size}"
                f" x seq_len {seq_len} (needs {need:,}): lower --batch-size or --seq-len, or give more text"
            )
        self._starts = np.arange(batch_size, dtype=np.int64)[:, None] * self.stream_len
        self._window = np.arange(seq_len + 1, dtype=np.int64)[None, :]

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @functools.lru_cache(maxsize=4)
    def epoch_offset(self, epoch: int) -> int:
        if epoch == 0:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(0, self.seq_len))

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, window index) of a global step."""
        return divmod(step, self.steps_per_epoch)

    def starts_fresh(self, step: int) -> bool:
        return self.position(step)[1] == 0

    def batch(self, step: int) -> Batch:
        """Inputs and targets of global step ``step``, each (batch_size, seq_len) int64."""
        epoch, window = self.position(step)
        index = self._starts + (window * self.seq_len + self.epoch_offset(epoch)) + self._window
        index %= len(self.tokens)  # the last stream's rotated tail wraps to the start
        block = np.asarray(self.tokens[index], dtype=np.int64)
        return block[:, :-1], block[:, 1:]


def eval_windows(tokens: np.ndarray, batch_size: int, seq_len: int) -> Iterator[Batch]:
    """Cut ``tokens`` into at most ``batch_size`` contiguous streams and yield (inputs, targets).

    Every position that has a next character in its stream is predicted exactly once; the
    windows of one stream follow each other so the caller can carry state across them. Streams
    are shortened to one length, which drops fewer than ``batch_size`` trailing characters.
    """
    n = len(tokens)
    streams = max(1, min(batch_size, (n - 1) // max(1, seq_len)))
    stream_len = n // streams
    if stream_len < 2:
        return
    grid = tokens[: streams * stream_len].reshape(streams, stream_len)  # a view: memmaps stay on disk
    for start in range(0, stream_len - 1, seq_len):
        end = min(start + seq_len, stream_len - 1)
        block = np.asarray(grid[:, start : end + 1], dtype=np.int64)
        yield block[:, :-1], block[:, 1:]


EVAL_WINDOW = 512  # forward-only, so long windows: fewer kernel calls, same carried-state result


class Stream(Part):
    """Token ids, predicted one after the other with the state carried along."""

    carries_state = True

    def __init__(self, tokens: np.ndarray):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: Any) -> Any:
        return self.tokens[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.tokens, dtype=dtype)

    @property
    def predicted(self) -> int:
        return max(len(self.tokens) - 1, 0)

    def eval_batches(self, batch_size: int, direction: str) -> Iterator[Batch]:
        tokens = self.tokens[::-1] if direction == "backward" else self.tokens
        return eval_windows(tokens, batch_size, EVAL_WINDOW)

    def as_stream(self) -> np.ndarray:
        return np.asarray(self.tokens)


class StreamData(RunData):
    """One text, or many files each after the document marker, as one stream of token ids."""

    unit = "chars"

    @classmethod
    def read(cls, source: TextSource, config: "DataConfig", vocab: Vocab | None = None,
             progress: bool = False) -> "StreamData":
        joining = None if source.single is not None else Joining(DOCUMENT, before_first=True)
        tokens = read_tokens(source, config.encoding, config.cache_dir, vocab, joining, config.split,
                             Holdout(config.val_fraction, config.test_fraction, config.split_seed), progress)
        return cls(source, config, tokens, tokens.vocab, tokens.unknown)

    @classmethod
    def encode_file(cls, path: str | Path, vocab: Vocab, encoding: str = "utf-8", cache_dir: str | None = None,
                    progress: bool = False) -> tuple[Part, int]:
        tokens = read_tokens(TextSource.of(path), encoding, cache_dir, vocab, progress=progress)
        return Stream(tokens.tokens), tokens.unknown

    @classmethod
    def encode_text(cls, text: str, vocab: Vocab) -> tuple[Part, int]:
        ids = vocab.encode(text, skip_unknown=True)
        return Stream(ids), len(text) - len(ids)

    def _cut(self) -> tuple[Part, Part, Part]:
        whole, bounds = self.tokens.tokens, self.tokens.bounds
        if bounds is not None:  # whole files held out
            return Stream(whole[:bounds[0]]), Stream(whole[bounds[0]:bounds[1]]), Stream(whole[bounds[1]:])
        parts = split_tokens(whole, self.config.val_fraction, self.config.test_fraction)
        return Stream(parts.train), Stream(parts.val), Stream(parts.test)

    def eval_part(self, max_chars: int | None) -> Part | None:
        """The val split's first ``max_chars`` (the same prefix every time, so evaluations on a huge
        text stay seconds long and compare); None when fewer than two characters are held out."""
        val = self.val.tokens if max_chars is None else self.val.tokens[:max_chars]
        return Stream(val) if len(val) >= 2 else None

    def batches(self, batch_size: int, seq_len: int, seed: int, direction: str) -> StreamBatches:
        """``batch_size`` contiguous streams in ``seq_len`` windows. The backward direction's streams
        run from the end of the text towards the start, so the state it carries into a window comes
        from the text after it."""
        train = self.train.tokens
        return StreamBatches(train[::-1] if direction == "backward" else train, batch_size, seq_len, seed)

    def fine_tune_vocab(self, vocab: Vocab, extend: bool, source: str) -> Vocab:
        if not self.tokens.single:
            raise CharlmError("--init-from fine-tunes on one text file: give a single FILE, not several or a folder")
        missing = sorted(set(self.vocab.chars) - set(vocab.chars))
        if missing and not extend:
            raise CharlmError(f"the text has {len(missing)} characters that {source} never saw: {format_chars(missing)};"
                              " add --extend-vocab to give them new embedding rows, or remove them from the text")
        return vocab.extended(missing)

    def hints(self) -> list[str]:
        from charlm.data.lines import looks_like_a_list

        found = looks_like_a_list(self.tokens.tokens, self.vocab)
        if found is None:
            return []
        return [f"{self.source.name} looks like a list ({found[0]:,} lines, median {found[1]} characters):"
                " --set data.mode=lines trains on whole lines"]

    @staticmethod
    def start_tokens(vocab: Vocab, prime: str) -> list[int]:
        """The prime; without one, a new document (a model of many files), or else as if after a
        newline (or a space)."""
        if prime:
            return [vocab.index[c] for c in prime]
        if vocab.document is not None:
            return [vocab.document]
        for fallback in ("\n", " "):
            if fallback in vocab.index:
                return [vocab.index[fallback]]
        return [0]

    @staticmethod
    def sample(sampler: Writer, prime: str, length: int, reverse: bool, **options: Any) -> str:
        return sampler.texts(prime, length, reverse=reverse, **options)[0]

    @staticmethod
    def preview(sampler: Writer, settings: "SampleConfig", length: int, seed: int | None, lines: int) -> str:
        """``length`` characters after the run's prime (left out if the model lacks its characters:
        this is a look at the model, not a request)."""
        prime = settings.prime if not sampler.vocab.missing(settings.prime) else ""
        return sampler.texts(prime, length, **sample_options(settings, seed))[0]
