"""Text generation: the prime read once by the fused kernel, then one hand-written step per character
(``charlm.model.fast_step.FastStep``, driven by ``charlm.generate.streams.StreamSet``), never re-running what was already read.

``generate`` yields token ids; ``Sampler`` turns them into text for a model, its vocabulary and
its kind of data (which says how a sample starts and what one sample is): samples that stop at a
string, samples written right to left, whole lines (lines mode) with novel/unique filters.
``charlm.api.LanguageModel`` is a ``Sampler``; training's previews use one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from charlm.data.vocab import DOCUMENT, MARKER, Vocab, format_chars
from charlm.errors import CharlmError
from charlm.generate.streams import Draw, StreamSet, stream_seed
from charlm.model.network import CharRNN

if TYPE_CHECKING:
    from charlm.config import SampleConfig
    from charlm.data.base import RunData


@torch.no_grad()
def generate(
    model: CharRNN,
    prime_ids: list[int],
    length: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    direction: str = "forward",
) -> Iterator[torch.Tensor]:
    """Yield ``length`` steps of token ids, each a (num_samples,) tensor on the CPU.

    The prime is read in one call; after that the state advances one character per step. Sample
    ``i`` draws from its own generator (``stream_seed(seed, i)``), as a stream of ``charlm serve``
    does: the same seed gives the same text here and there. With ``direction="backward"`` both the
    prime and the output are in right-to-left order.
    """
    streams = StreamSet(model, direction, num_samples)
    streams.add(prime_ids, [(i, Draw(temperature, top_k, top_p, greedy, stream_seed(seed, i)))
                            for i in range(num_samples)])
    for _ in range(length):
        yield torch.tensor([drawn.token for drawn in streams.tick()])


@dataclass
class LineDraw:
    """Lines drawn in rounds through filters: up to ``count`` kept, none in ``exclude`` (say, the
    training set) and, with ``unique``, no repeats; how many were made, and how many were novel.
    ``charlm sample --novel`` and the server draw their rounds alike (``round_seed``)."""

    count: int
    exclude: set[str] | None = None
    unique: bool = False
    lines: list[str] = field(default_factory=list)
    made: int = 0
    novel: int = 0
    ROUNDS: ClassVar[int] = 50

    @staticmethod
    def round_seed(seed: int | None, round_number: int) -> int | None:
        return None if seed is None else seed + round_number

    def take(self, lines: list[str]) -> bool:
        """One round's lines through the filters; True once ``count`` have passed."""
        for line in lines:
            self.made += 1
            is_novel = self.exclude is None or line not in self.exclude
            self.novel += is_novel
            if is_novel and not (self.unique and line in self.lines) and len(self.lines) < self.count:
                self.lines.append(line)
        return len(self.lines) >= self.count


class Sampler:
    """Generate text from ``model`` with its vocabulary ``vocab``, as a model of ``kind`` of data
    (``charlm.data.kind``) writes.

    Sampling options, wherever ``**options`` appears: ``temperature`` (> 0), ``top_k`` (0: off),
    ``top_p`` (1: off), ``greedy`` and ``seed`` (same seed, same text).
    """

    def __init__(self, model: CharRNN, vocab: Vocab, kind: "type[RunData]"):
        self.model = model
        self.vocab = vocab
        self.kind = kind

    def check_text(self, text: str, what: str = "prime") -> None:
        missing = self.vocab.missing(text)
        if missing:
            raise CharlmError(
                f"{what} has characters the model never saw: {format_chars(missing)}; remove them"
                f" (the model knows {len(self.vocab)} characters, see `charlm info`)"
            )

    def stream(self, prime: str = "", length: int = 500, num_samples: int = 1, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, greedy: bool = False, seed: int | None = None,
               reverse: bool = False) -> Iterator[list[str]]:
        """Yield, per step, the next character of each of ``num_samples`` samples.

        With ``reverse`` the backward direction writes right to left: ``prime`` is the end of the
        text and each step yields the character before the ones already made.
        """
        self.check_text(prime)
        if reverse and not self.model.bidirectional:
            raise CharlmError("this model has no backward direction, so it cannot sample in reverse:"
                              " train with --set model.bidirectional=true")
        ids = self.kind.start_tokens(self.vocab, prime[::-1] if reverse else prime)
        direction = "backward" if reverse else "forward"
        for step_ids in generate(self.model, ids, length, num_samples, temperature, top_k, top_p, greedy,
                                 seed, direction):
            yield [self.vocab.chars[i] for i in step_ids.tolist()]

    def texts(self, prime: str = "", length: int = 500, num_samples: int = 1, stop: str | None = None,
              reverse: bool = False, on_text: Callable[[str], None] | None = None,
              stop_at_document_end: bool = False, **options: Any) -> list[str]:
        """``num_samples`` samples in reading order: the prime then ``length`` generated characters, or
        with ``reverse`` the characters written before the prime, then the prime. A sample ends early
        once it has produced ``stop``, or with ``stop_at_document_end`` where the model (trained on
        many files) starts the next document; the document marker itself is never part of a text.
        ``on_text`` receives sample 0 as it is made (the prime first; not with ``reverse``, whose text
        is only in reading order at the end)."""
        if stop_at_document_end and self.vocab.document is None:
            raise CharlmError("--stop-at-document-end needs a model trained on several files (it has no"
                              " document marker): use --stop or --length")
        made = [""] * num_samples
        done = [False] * num_samples
        wanted = stop[::-1] if stop and reverse else stop  # made right to left, so the stop string is too
        live = on_text if not reverse else None
        if live:
            live(prime)
        for chars in self.stream(prime, length, num_samples, reverse=reverse, **options):
            for i, ch in enumerate(chars):
                if done[i]:
                    continue
                if ch == DOCUMENT:
                    done[i] = stop_at_document_end
                    continue
                made[i] += ch
                if live and i == 0:
                    live(ch)
                done[i] = bool(wanted) and made[i].endswith(wanted)
            if all(done):
                break
        return [text[::-1] + prime if reverse else prime + text for text in made]

    def sample(self, prime: str = "", length: int = 500, reverse: bool = False, **options: Any) -> str:
        """One sample (see ``texts``); of a list, one line of at most ``length`` characters."""
        return self.kind.sample(self, prime, length, reverse, **options)

    def preview(self, settings: SampleConfig, length: int, seed: int | None, lines: int) -> str:
        """A sample as a run's ``sample`` settings describe it (of a list: ``lines`` lines)."""
        return self.kind.preview(self, settings, length, seed, lines)

    def lines(self, count: int, prime: str = "", max_length: int = 500, **options: Any) -> list[str]:
        """``count`` complete lines (lines mode), each ending where the model wrote the end marker or
        after ``max_length`` characters; ``prime`` is the start of every line."""
        made = [""] * count
        done = [False] * count
        for chars in self.stream(prime, max_length, count, **options):
            for i, ch in enumerate(chars):
                if not done[i]:
                    done[i] = ch == MARKER
                    made[i] += "" if done[i] else ch
            if all(done):
                break
        return [prime + text for text in made]

    def filtered_lines(self, count: int, exclude: set[str] | None = None, unique: bool = False, prime: str = "",
                       max_length: int = 500, seed: int | None = None, greedy: bool = False,
                       **options: Any) -> LineDraw:
        """Up to ``count`` lines through ``LineDraw``'s filters, drawn in rounds of ``count``."""
        draw = LineDraw(count, exclude, unique)
        for round_number in range(LineDraw.ROUNDS):
            lines = self.lines(count, prime, max_length, seed=LineDraw.round_seed(seed, round_number), greedy=greedy,
                               **options)
            if draw.take(lines) or greedy:  # greedy lines are all the same: more rounds add nothing
                break
        return draw
