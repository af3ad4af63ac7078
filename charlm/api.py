"""The small Python API the CLI is built on: ``charlm.load(path)`` gives a ``LanguageModel``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from charlm.config import Config
from charlm.corpora import text_of
from charlm.data import kind, read_data
from charlm.data.base import Part, RunData
from charlm.data.source import TextSource
from charlm.errors import CharlmError
from charlm.evaluate import evaluate_directions
from charlm.generate.sample import LineDraw, Sampler
from charlm.model.network import CharRNN
from charlm.runtime import resolve_device
from charlm.train.checkpoint import Checkpoint


class LanguageModel(Sampler):
    """A trained model with its vocabulary and checkpoint: sample (see ``Sampler``) and evaluate."""

    def __init__(self, model: CharRNN, checkpoint: Checkpoint, path: Path):
        super().__init__(model, checkpoint.vocab, kind(checkpoint.config.data.mode))
        self.checkpoint = checkpoint
        self.path = path

    @property
    def config(self) -> Config:
        return self.checkpoint.config

    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    def new_lines(self, count: int, novel: bool = False, unique: bool = False, **options: Any) -> LineDraw:
        """Lines mode: ``count`` lines, with ``novel`` none that is in the training set, with ``unique``
        no repeats (``Sampler.filtered_lines``)."""
        return self.filtered_lines(count, self.training_lines() if novel else None, unique, **options)

    def run_data(self, progress: bool = False) -> RunData:
        """The text this model was trained on, read and split as in training."""
        record = self.checkpoint.text
        try:  # what it read; a run of many files saved before the record named them: what its config names
            source = (TextSource.from_dict(record.source) if record.source is not None
                      else text_of(self.config, "the run's config names no text"))
            data = read_data(source, self.config.data, self.vocab, progress)
        except CharlmError as exc:
            raise CharlmError(f"the text {self.path} was trained on cannot be read ({exc}): pass the file to use"
                              " as FILE") from None
        if data.sha256 != self.checkpoint.text.sha256:
            raise CharlmError(f"{data.source} changed since {self.path} was trained: pass the file to use as FILE")
        return data

    def own_data(self, split: str, progress: bool = False) -> Part:
        """One split (train, val or test) of the text this model was trained on, cut as in training."""
        return self.run_data(progress).split(split)

    def file_data(self, path: str | Path, encoding: str = "utf-8", progress: bool = False) -> tuple[Part, int]:
        """A file as this model reads it, and how many of its characters the model never saw (they
        are left out)."""
        return self.kind.encode_file(path, self.vocab, encoding, self.config.data.cache_dir, progress)

    def training_lines(self) -> set[str]:
        """The lines this model was trained on (lines mode)."""
        return set(self.own_data("train").texts(self.vocab))

    def evaluate_part(self, part: Part, batch_size: int | None = None) -> dict[str, Any]:
        """Forward loss, bpc, perplexity and chars on ``part`` (``own_data``, ``file_data``); for a
        bidirectional model also the backward ones."""
        batch_size = batch_size or self.config.train.eval_batch_size
        results = evaluate_directions(self.model, part, batch_size, self.device)
        report = results["forward"].as_dict()
        if "backward" in results:
            backward = results["backward"]
            report.update(loss_backward=backward.loss, bpc_backward=backward.bpc,
                          perplexity_backward=backward.perplexity)
        return report

    def evaluate(self, text: str) -> dict[str, Any]:
        """Loss, bpc, perplexity and character count on ``text``, read as this model reads a file;
        unknown characters are skipped."""
        part, unknown = self.kind.encode_text(text, self.vocab)
        return {**self.evaluate_part(part), "unknown_chars": unknown}


def load(path: str | Path, device: str = "cpu") -> LanguageModel:
    """Load a checkpoint file or run directory for sampling and evaluation."""
    checkpoint = Checkpoint.load(path)
    model = checkpoint.build_model().to(resolve_device(device)).eval()
    return LanguageModel(model, checkpoint, Path(checkpoint.source))
