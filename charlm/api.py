"""The small Python API the CLI is built on: ``charlm.load(path)`` gives a ``LanguageModel``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.checkpoint import Checkpoint
from charlm.config import Config
from charlm.corpora import text_of
from charlm.documents import TextSource
from charlm.errors import CharlmError
from charlm.evaluate import evaluate_directions
from charlm.lines import Lines
from charlm.model import CharRNN
from charlm.rundata import RunData, encode_file
from charlm.runtime import resolve_device
from charlm.sample import LineDraw, Sampler


class LanguageModel(Sampler):
    """A trained model with its vocabulary and checkpoint: sample (see ``Sampler``) and evaluate."""

    def __init__(self, model: CharRNN, checkpoint: Checkpoint, path: Path):
        super().__init__(model, checkpoint.vocab)
        self.checkpoint = checkpoint
        self.path = path

    @property
    def config(self) -> Config:
        return self.checkpoint.config

    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    def sample_lines(self, count: int, prime: str = "", max_length: int = 500, **options: Any) -> list[str]:
        """``count`` complete lines (lines mode); see ``Sampler.lines``."""
        return self.lines(count, prime, max_length, **options)

    def new_lines(self, count: int, novel: bool = False, unique: bool = False, **options: Any) -> LineDraw:
        """Lines mode: ``count`` lines, with ``novel`` none that is in the training set, with ``unique``
        no repeats (``Sampler.filtered_lines``)."""
        return self.filtered_lines(count, self.training_lines() if novel else None, unique, **options)

    def run_data(self, progress: bool = False) -> RunData:
        """The text this model was trained on, read and split as in training."""
        data_config = self.config.data
        if self.checkpoint.text.splits is not None:  # many files: read them as the run's config names them
            source = text_of(self.config, "the run's config names no text")
        else:
            path = Path(self.checkpoint.text.path)
            if not path.is_file():
                raise CharlmError(f"the run's text {path} is gone: pass the file to use as FILE")
            source = TextSource.of(path)
        data = RunData.read(source, data_config, vocab=self.vocab, progress=progress)
        if data.sha256 != self.checkpoint.text.sha256:
            raise CharlmError(f"{source} changed since {self.path} was trained: pass the file to use as FILE")
        return data

    def own_data(self, split: str, progress: bool = False) -> "np.ndarray | Lines":
        """One split (train, val or test) of the text this model was trained on, cut as in training:
        a token array, or in lines mode its lines."""
        return self.run_data(progress).split(split)

    def file_data(self, path: str | Path, encoding: str = "utf-8", progress: bool = False
                  ) -> tuple["np.ndarray | Lines", int]:
        """A file as this model reads it (a token array, or in lines mode its lines), and how many of
        its characters the model never saw (they are left out)."""
        mode = "lines" if self.lines_mode else "stream"
        encoded = encode_file(path, mode, self.vocab, encoding, self.config.data.cache_dir, progress)
        return encoded.data, encoded.unknown

    def training_lines(self) -> set[str]:
        """The lines this model was trained on (lines mode)."""
        return set(self.own_data("train").texts(self.vocab))

    def evaluate_tokens(self, tokens: "np.ndarray | Lines", batch_size: int | None = None) -> dict[str, Any]:
        """On a token stream or (lines mode) on lines: forward loss, bpc, perplexity and chars; for a
        bidirectional model also the backward ones."""
        batch_size = batch_size or self.config.train.eval_batch_size
        results = evaluate_directions(self.model, tokens, batch_size, self.device, marker=self.vocab.marker)
        report = results["forward"].as_dict()
        if "backward" in results:
            backward = results["backward"]
            report.update(loss_backward=backward.loss, bpc_backward=backward.bpc,
                          perplexity_backward=backward.perplexity)
        return report

    def evaluate(self, text: str) -> dict[str, Any]:
        """Loss, bpc, perplexity and character count on ``text``; unknown characters are skipped."""
        tokens = self.vocab.encode(text, skip_unknown=True)
        result = self.evaluate_tokens(tokens)
        result["unknown_chars"] = len(text) - len(tokens)
        return result


def load(path: str | Path, device: str = "cpu") -> LanguageModel:
    """Load a checkpoint file or run directory for sampling and evaluation."""
    checkpoint = Checkpoint.load(path)
    model = checkpoint.build_model().to(resolve_device(device)).eval()
    return LanguageModel(model, checkpoint, Path(checkpoint.source))
