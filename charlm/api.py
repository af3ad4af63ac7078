"""The small Python API the CLI is built on: ``charlm.load(path)`` gives a ``LanguageModel``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.checkpoint import load_checkpoint, resolve_checkpoint
from charlm.config import Config
from charlm.data import MARKER, Vocab, format_chars, load_tokens, split_tokens
from charlm.errors import CharlmError
from charlm.lines import Lines, split_into_lines, split_lines
from charlm.evaluate import evaluate_directions
from charlm.model import CharRNN
from charlm.runtime import resolve_device
from charlm.sample import generate, make_generator, start_tokens


class LanguageModel:
    """A trained model with its vocabulary and config, ready to sample and evaluate."""

    def __init__(self, model: CharRNN, vocab: Vocab, config: Config, checkpoint: dict[str, Any], path: Path):
        self.model = model
        self.vocab = vocab
        self.config = config
        self.checkpoint = checkpoint
        self.path = path

    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    def check_text(self, text: str, what: str = "prime") -> None:
        missing = self.vocab.missing(text)
        if missing:
            raise CharlmError(
                f"{what} has characters the model never saw: {format_chars(missing)}; remove them"
                f" (the model knows {len(self.vocab)} characters, see `charlm info`)"
            )

    def stream(
        self,
        prime: str = "",
        length: int = 500,
        num_samples: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        greedy: bool = False,
        seed: int | None = None,
        reverse: bool = False,
    ) -> Iterator[list[str]]:
        """Yield, per step, the next character of each of ``num_samples`` samples.

        With ``reverse`` the backward direction writes right to left: ``prime`` is the end of the
        text and each step yields the character before the ones already made.
        """
        self.check_text(prime)
        if reverse and not self.model.bidirectional:
            raise CharlmError(
                "this model has no backward direction, so it cannot sample in reverse:"
                " train with --set model.bidirectional=true"
            )
        generator = make_generator(seed)
        ids = start_tokens(self.vocab, prime[::-1] if reverse else prime)
        direction = "backward" if reverse else "forward"
        for step_ids in generate(
            self.model, ids, length, num_samples, temperature, top_k, top_p, greedy, generator, direction
        ):
            yield [self.vocab.chars[i] for i in step_ids.tolist()]

    def sample(self, prime: str = "", length: int = 500, reverse: bool = False, **options: Any) -> str:
        """One sample in reading order: the prime then ``length`` generated characters, or with
        ``reverse`` the ``length`` characters the backward direction wrote before the prime. In lines
        mode, one line (at most ``length`` characters)."""
        if self.lines_mode and not reverse:  # one sample of a list is one line
            return self.sample_lines(1, prime, length, **options)[0]
        made = "".join(chars[0] for chars in self.stream(prime, length, num_samples=1, reverse=reverse, **options))
        return made[::-1] + prime if reverse else prime + made

    @property
    def lines_mode(self) -> bool:
        return self.vocab.marker is not None

    def sample_lines(self, count: int, prime: str = "", max_length: int = 500, seed: int | None = None,
                     **options: Any) -> list[str]:
        """``count`` complete lines (lines mode), each ending where the model wrote the end marker or
        after ``max_length`` characters; ``prime`` is the start of every line."""
        made = [""] * count
        done = [False] * count
        for chars in self.stream(prime, max_length, count, seed=seed, **options):
            for i, ch in enumerate(chars):
                if done[i]:
                    continue
                if ch == MARKER:
                    done[i] = True
                else:
                    made[i] += ch
            if all(done):
                break
        return [prime + text for text in made]

    def own_data(self, split: str, progress: bool = False) -> "np.ndarray | Lines":
        """One split (train, val or test) of the text this model was trained on, cut as in training:
        a token array, or in lines mode its lines."""
        data = self.config.data
        path = Path(self.checkpoint["data"]["path"])
        if not path.is_file():
            raise CharlmError(f"the run's text {path} is gone: pass the file to use as FILE")
        token_file = load_tokens(path, data.encoding, data.cache_dir, vocab=None if self.lines_mode else self.vocab,
                                 progress=progress)
        if token_file.sha256 != self.checkpoint["data"]["sha256"]:
            raise CharlmError(f"{path} changed since {self.path} was trained: pass the file to use as FILE")
        if self.lines_mode:
            lines = split_into_lines(token_file.tokens, token_file.vocab, self.vocab)
            return getattr(split_lines(lines, data.val_fraction, data.test_fraction, data.split_seed,
                                       data.holdout_cap), split)
        return getattr(split_tokens(token_file.tokens, data.val_fraction, data.test_fraction), split)

    def file_data(self, path: str | Path, encoding: str = "utf-8", progress: bool = False
                  ) -> tuple["np.ndarray | Lines", int]:
        """A file as this model reads it (a token array, or in lines mode its lines), and how many of
        its characters the model never saw (they are left out)."""
        cache = self.config.data.cache_dir
        if not self.lines_mode:
            token_file = load_tokens(path, encoding, cache, vocab=self.vocab, progress=progress)
            return token_file.tokens, token_file.unknown
        token_file = load_tokens(path, encoding, cache, progress=progress)
        counts = np.bincount(np.asarray(token_file.tokens), minlength=len(token_file.vocab))
        unknown = sum(int(n) for ch, n in zip(token_file.vocab.chars, counts)
                      if ch not in self.vocab.index and ch not in "\n\r")
        return split_into_lines(token_file.tokens, token_file.vocab, self.vocab), unknown

    def training_lines(self) -> set[str]:
        """The lines this model was trained on (lines mode)."""
        return set(self.own_data("train").texts(self.vocab))

    def evaluate_tokens(self, tokens: "np.ndarray | Lines", batch_size: int | None = None) -> dict[str, Any]:
        """On a token stream or (lines mode) on lines: forward loss, bpc, perplexity and chars; for a bidirectional model also the backward ones."""
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


def model_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[CharRNN, Vocab, Config]:
    config = Config.from_dict(checkpoint["config"], source="checkpoint config")
    vocab = Vocab(checkpoint["vocab"])
    model = CharRNN.from_config(config.model, len(vocab))
    model.load_state_dict(checkpoint["model"])
    return model, vocab, config


def load(path: str | Path, device: str = "cpu") -> LanguageModel:
    """Load a checkpoint file or run directory for sampling and evaluation."""
    resolved = resolve_checkpoint(path)
    checkpoint = load_checkpoint(resolved)
    try:
        model, vocab, config = model_from_checkpoint(checkpoint)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CharlmError(f"{resolved} is a damaged charlm checkpoint ({str(exc).splitlines()[0][:100]})") from None
    model.to(resolve_device(device)).eval()
    return LanguageModel(model, vocab, config, checkpoint, resolved)
