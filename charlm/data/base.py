"""The one interface to a run's text that both kinds share: ``RunData`` (the text, its vocabulary
and splits), ``Part`` (one split, as evaluations read it) and ``Batches`` (a direction's training
batches, each a function of the step).

Training, ``charlm eval``, the API, ``charlm inspect`` and sampling never ask which kind they hold:
each kind knows its splits, its training batches, what an evaluation reads, what a preview and a
sample are, and how a sample starts. ``charlm.data.read_data`` gives the kind ``data.mode`` names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from charlm.config import SPLITS
from charlm.data.source import TextSource
from charlm.data.tokens import Tokens
from charlm.data.vocab import Vocab

if TYPE_CHECKING:
    from charlm.config import DataConfig, SampleConfig

Batch = tuple[np.ndarray, np.ndarray]  # inputs, targets: (rows, length) int64


class Writer(Protocol):
    """What a kind asks of whoever samples from a model (``charlm.generate.sample.Sampler``) to write
    one sample or a preview its own way; declared here so that data never imports generation."""

    vocab: Vocab

    def texts(self, prime: str = "", length: int = 500, num_samples: int = 1, stop: str | None = None,
              reverse: bool = False, **options: Any) -> list[str]: ...

    def lines(self, count: int, prime: str = "", max_length: int = 500, **options: Any) -> list[str]: ...


class Batches(Protocol):
    """A direction's training batches, each a function of the step alone."""

    steps_per_epoch: int
    tokens_per_step: int

    def batch(self, step: int) -> Batch: ...

    def starts_fresh(self, step: int) -> bool:
        """Whether step ``step`` starts from a fresh recurrent state (not the one the last step left)."""
        ...

    def position(self, step: int) -> tuple[int, int]: ...


class Part(ABC):
    """One split of a run's text (or any text read as a model reads it), as evaluations read it."""

    carries_state: ClassVar[bool]  # whether an evaluation carries the state from batch to batch

    @abstractmethod
    def __len__(self) -> int:
        """Characters or lines."""

    @property
    @abstractmethod
    def predicted(self) -> int:
        """How many characters a model predicts on it."""

    @abstractmethod
    def eval_batches(self, batch_size: int, direction: str) -> Iterator[Batch]:
        """Every prediction once, in batches; the backward direction reads right to left."""

    @abstractmethod
    def as_stream(self) -> np.ndarray:
        """The token ids as a model reads them one after the other."""

    def describe(self) -> dict[str, Any]:
        """What ``charlm eval --json`` says of it besides the loss."""
        return {}


class RunData(ABC):
    """The text a run trains on: its vocabulary and its splits (cut when first asked for)."""

    unit: ClassVar[str]  # what its splits count: "chars" or "lines"

    def __init__(self, source: TextSource, config: "DataConfig", tokens: Tokens, vocab: Vocab, unknown: int):
        self.source, self.config, self.tokens = source, config, tokens
        self.vocab, self.unknown, self.sha256 = vocab, unknown, tokens.sha256

    # ---- reading, for each kind ----------------------------------------------------------------

    @classmethod
    @abstractmethod
    def read(cls, source: TextSource, config: "DataConfig", vocab: Vocab | None = None,
             progress: bool = False) -> "RunData":
        """Read ``source`` as ``config`` says, in ``vocab`` (a run's own) or else the text's own characters."""

    @classmethod
    @abstractmethod
    def encode_file(cls, path: str | Path, vocab: Vocab, encoding: str = "utf-8", cache_dir: str | None = None,
                    progress: bool = False) -> tuple[Part, int]:
        """Any file as a model of this kind with ``vocab`` reads it, and how many of its characters the
        vocabulary lacks (they are left out)."""

    @classmethod
    @abstractmethod
    def encode_text(cls, text: str, vocab: Vocab) -> tuple[Part, int]:
        """A string as a model of this kind with ``vocab`` reads it, and how many of its characters the
        vocabulary lacks (they are left out)."""

    # ---- the splits ----------------------------------------------------------------------------

    @abstractmethod
    def _cut(self) -> tuple[Part, Part, Part]:
        """Train, val and test."""

    @cached_property
    def _parts(self) -> tuple[Part, Part, Part]:
        return self._cut()

    def split(self, name: str) -> Part:
        """The train, val or test part."""
        return self._parts[SPLITS.index(name)]

    @property
    def train(self) -> Part:
        return self.split("train")

    @property
    def val(self) -> Part:
        return self.split("val")

    @abstractmethod
    def eval_part(self, max_chars: int | None) -> Part | None:
        """What evaluations during training read (None when too little is held out)."""

    @abstractmethod
    def batches(self, batch_size: int, seq_len: int, seed: int, direction: str) -> Batches:
        """Training batches for one direction."""

    @abstractmethod
    def fine_tune_vocab(self, vocab: Vocab, extend: bool, source: str) -> Vocab:
        """--init-from ``source``: its vocabulary ``vocab`` grown by this text's new characters, where
        ``extend`` allows."""

    # ---- what a run says about its text ----------------------------------------------------------

    @property
    def window_length(self) -> float | None:
        """The length of a training example the text fixes (a line's mean), or None where
        ``train.seq_len`` chooses it."""
        return None

    @property
    def what(self) -> str:
        """What the text is, for messages."""
        return "file" if self.tokens.single else "files (one added, changed or removed)"

    def hints(self) -> list[str]:
        """Advice on how to train this text (one line each)."""
        return []

    def describe(self) -> dict[str, Any]:
        """The text's part of the ``start`` event."""
        files = self.tokens.counts()
        return {f"train_{self.unit}": len(self.train), f"val_{self.unit}": len(self.val),
                **({"files": files} if files is not None else {})}

    def run_files(self) -> dict[str, str]:
        """Files the run directory keeps about the text, by name: for many files ``files.txt``, the list
        of what was read and skipped."""
        manifest = self.tokens.manifest()
        return {} if manifest is None else {"files.txt": manifest}

    def summary(self) -> str:
        """e.g. "412 files (370 train / 42 val), 1,003,854 train / 111,540 val chars, 65 symbols"."""
        counts = self.tokens.counts()
        files = "" if counts is None else (
            f"{sum(c['files'] for c in counts.values()):,} files ("
            + " / ".join(f"{counts[n]['files']:,} {n}" for n in SPLITS if counts[n]["files"]) + "), ")
        return f"{files}{len(self.train):,} train / {len(self.val):,} val {self.unit}, {len(self.vocab)} symbols"

    # ---- sampling, for each kind (no text needed: a checkpoint's vocabulary will do) --------------

    @staticmethod
    @abstractmethod
    def start_tokens(vocab: Vocab, prime: str) -> list[int]:
        """Token ids a sample reads first: the prime, as a sample of this kind begins."""

    @staticmethod
    @abstractmethod
    def sample(sampler: "Writer", prime: str, length: int, reverse: bool, **options: Any) -> str:
        """One sample: a text, or one line."""

    @staticmethod
    @abstractmethod
    def preview(sampler: "Writer", settings: "SampleConfig", length: int, seed: int | None, lines: int) -> str:
        """A look at the model as a run's ``sample`` settings describe it."""

    @staticmethod
    def opening(vocab: Vocab) -> list[int]:
        """What a model reads before a text it scores character by character (``charlm inspect text``)."""
        return []

    @staticmethod
    def line_break(vocab: Vocab) -> tuple[int | None, bool]:
        """A line break as such a reading meets it: the token it is, and whether the state starts afresh."""
        return vocab.index.get("\n"), False


def sample_options(settings: "SampleConfig", seed: int | None) -> dict[str, Any]:
    """A run's ``sample`` settings as sampling options."""
    return {"temperature": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p, "seed": seed}
