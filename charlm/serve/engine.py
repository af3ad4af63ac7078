"""One engine per served model: a thread that owns the model and batches every stream continuously.

Each loop of the thread takes new work (a completion's prompt is read by the fused kernel; a score
reads one chunk), then ticks: every active stream draws one character in one batched step
(``charlm.generate.streams.StreamSet``). A stream that is done, hit a stop string or lost its client leaves
before the next tick. The event loop only hands work in and takes events out: the model never runs
on it. Events reach the loop once per tick, in one call.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from charlm.data.vocab import DOCUMENT, MARKER, Vocab
from charlm.generate.streams import Draw, Drawn, StreamSet

# ("text", choice, [(char, logprob, top)]) | ("finish", choice, reason) | ("result" or "error", 0, value); a
# choice is numbered across the request (prompt number x n + choice), so one queue serves all its prompts.
Event = tuple[str, int, Any]



class Busy(Exception):
    """The engine's queue is full: the caller answers 503 with Retry-After."""


@dataclass
class Choice:
    """One stream of a completion: what it has made and what it may still show (a stop string's
    possible start is held back until it is known not to be one)."""

    index: int
    draw: Draw
    made: list[tuple[str, float | None, list[tuple[str, float]] | None]] = field(default_factory=list)
    shown: int = 0
    done: bool = False


class Work:
    """Something an engine runs for one request; its events go to ``queue`` on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[Event] | None" = None):
        self.loop = loop
        self.queue: asyncio.Queue[Event] = queue if queue is not None else asyncio.Queue()
        self.cancelled = False  # set from the event loop when the client goes away

    @property
    def streams(self) -> int:
        return 0


class Completion(Work):
    """A completion request: ``prime`` read once, then one stream per choice."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prime: list[int], draws: list[Draw], max_tokens: int,
                 stops: list[str], direction: str, ends_at_document: bool, time_limit: float,
                 queue: "asyncio.Queue[Event] | None" = None, first_index: int = 0):
        super().__init__(loop, queue)
        self.first_index = first_index
        self.prime, self.max_tokens, self.stops = prime, max_tokens, stops
        self.direction, self.ends_at_document = direction, ends_at_document
        self.longest_stop = max((len(stop) for stop in stops), default=0)
        self.choices = [Choice(i, draw) for i, draw in enumerate(draws)]
        self.deadline = time.monotonic() + time_limit

    @property
    def streams(self) -> int:
        return len(self.choices)


class Score(Work):
    """A score request: ``run`` is a generator that reads a chunk per call of ``next`` and returns the result."""

    def __init__(self, loop: asyncio.AbstractEventLoop, run: Callable[[], Iterator[None]]):
        super().__init__(loop)
        self.run = run


class Engine:
    """The thread that runs one model: ``submit`` work, ``cancel`` it, ``close`` at shutdown."""

    def __init__(self, model: Any, vocab: Vocab, max_streams: int, queue_limit: int):
        self.vocab, self.max_streams, self.queue_limit = vocab, max_streams, queue_limit
        directions = ("forward", "backward") if model.bidirectional else ("forward",)
        self.sets = {d: StreamSet(model, d, max_streams) for d in directions}
        self.pending: deque[Work] = deque()
        self.running: dict[tuple[int, int], Completion] = {}  # (id of the completion, choice) -> completion
        self.scores: list[tuple[Score, Iterator[None]]] = []
        self.condition = threading.Condition()
        self.closing = False
        self.generated = 0  # characters, for /metrics
        self.thread = threading.Thread(target=self._run, name="charlm-engine", daemon=True)
        self.thread.start()

    @property
    def active_streams(self) -> int:
        return sum(len(s) for s in self.sets.values())

    @property
    def queued_streams(self) -> int:
        return sum(work.streams for work in list(self.pending))

    def submit(self, work: Work) -> None:
        if work.streams > self.max_streams:
            raise ValueError(f"{work.streams} streams in one request, more than the engine's {self.max_streams}")
        with self.condition:
            if self.closing:
                raise Busy("the server is shutting down")
            if work.streams and self.queued_streams + work.streams > self.queue_limit:
                raise Busy(f"{self.active_streams} streams are running and {self.queued_streams} waiting")
            self.pending.append(work)
            self.condition.notify()

    def cancel(self, work: Work) -> None:
        work.cancelled = True
        with self.condition:
            self.condition.notify()

    def close(self) -> None:
        """End every open stream (finish reason "shutdown") and stop the thread."""
        with self.condition:
            self.closing = True
            self.condition.notify()
        self.thread.join(timeout=10)

    # ---- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            outgoing: list[tuple[Work, Event]] = []
            with self.condition:
                while not (self.pending or self.running or self.scores or self.closing):
                    self.condition.wait()
                closing = self.closing
                admitted = self._admit() if not closing else []
            if closing:
                self._shut(outgoing, "the server is shutting down")
                self._deliver(outgoing)
                return
            try:
                self._loop(admitted, outgoing)
            except Exception as exc:  # noqa: BLE001 - a bug must fail the requests it touched, not the server
                print(f"error: engine: {type(exc).__name__}: {exc}", file=sys.stderr)
                self._shut(outgoing, "internal error; the request was ended", reason="error", waiting=False)
                for work in admitted:
                    outgoing.append((work, ("error", 0, "internal error; the request was ended")))
                for streams in self.sets.values():
                    streams.clear()
            self._deliver(outgoing)

    def _loop(self, admitted: list[Work], outgoing: list[tuple[Work, Event]]) -> None:
        """One round: start what was admitted, read a chunk of each score, tick every stream, and let
        go of the streams that are done (or lost their client, or their time)."""
        for work in admitted:
            self._start(work, outgoing)
        self._read_scores(outgoing)
        for streams in self.sets.values():
            for drawn in streams.tick():
                self._take(drawn, outgoing)
        self._drop_finished(outgoing)

    def _admit(self) -> list[Work]:
        """Work from the queue, first come first served, while streams are free."""
        admitted, free = [], self.max_streams - self.active_streams
        while self.pending and self.pending[0].streams <= free:
            free -= self.pending[0].streams
            admitted.append(self.pending.popleft())
        return admitted

    def _start(self, work: Work, outgoing: list[tuple[Work, Event]]) -> None:
        if work.cancelled:
            return
        if isinstance(work, Score):
            self.scores.append((work, work.run()))
            return
        assert isinstance(work, Completion)
        self.sets[work.direction].add(work.prime, [((id(work), c.index), c.draw) for c in work.choices])
        for choice in work.choices:
            self.running[(id(work), choice.index)] = work

    def _read_scores(self, outgoing: list[tuple[Work, Event]]) -> None:
        for score, reading in list(self.scores):
            if score.cancelled:  # nobody waits for the result
                self.scores.remove((score, reading))
                continue
            try:
                next(reading)
            except StopIteration as done:
                self.scores.remove((score, reading))
                outgoing.append((score, ("result", 0, done.value)))
            except Exception as exc:  # noqa: BLE001 - a bug in one request must not end the engine
                self.scores.remove((score, reading))
                outgoing.append((score, ("error", 0, f"{type(exc).__name__}: {exc}")))

    def _take(self, drawn: Drawn, outgoing: list[tuple[Work, Event]]) -> None:
        """One character of one stream: shown, held back, or the end of its choice."""
        work = self.running[drawn.key]
        choice = work.choices[drawn.key[1]]
        char = self.vocab.chars[drawn.token]
        if char == MARKER or (char == DOCUMENT and work.ends_at_document):
            return self._finish(work, choice, "stop", outgoing)
        if char == DOCUMENT:  # between two files of a many-file model: not a character of the text
            return None
        top = [(self.vocab.chars[i], lp) for i, lp in drawn.top] if drawn.top else None
        choice.made.append((char, drawn.logprob, top))
        self.generated += 1
        if work.stops:
            # Only the last characters can complete a stop string (made right to left when backward).
            tail = "".join(c for c, _, _ in choice.made[-work.longest_stop:])
            for stop in work.stops:
                if tail.endswith(stop[::-1] if work.direction == "backward" else stop):
                    del choice.made[len(choice.made) - len(stop):]
                    return self._finish(work, choice, "stop", outgoing)
        if len(choice.made) >= work.max_tokens:
            return self._finish(work, choice, "length", outgoing)
        self._show(work, choice, outgoing, held=self._held(choice, work) if work.stops else 0)
        return None

    @staticmethod
    def _held(choice: Choice, work: Completion) -> int:
        """How many of the last characters could still be the start of a stop string."""
        tail = "".join(c for c, _, _ in choice.made[-work.longest_stop:])
        longest = 0
        for stop in work.stops:
            target = stop[::-1] if work.direction == "backward" else stop  # in the order characters are made
            for size in range(min(len(target) - 1, len(tail)), longest, -1):
                if tail.endswith(target[:size]):
                    longest = size
                    break
        return longest

    def _show(self, work: Completion, choice: Choice, outgoing: list[tuple[Work, Event]], held: int = 0) -> None:
        upto = len(choice.made) - held
        if upto > choice.shown:
            outgoing.append((work, ("text", work.first_index + choice.index, choice.made[choice.shown:upto])))
            choice.shown = upto

    def _finish(self, work: Completion, choice: Choice, reason: str, outgoing: list[tuple[Work, Event]]) -> None:
        self._show(work, choice, outgoing)
        choice.done = True
        outgoing.append((work, ("finish", work.first_index + choice.index, reason)))

    def _drop_finished(self, outgoing: list[tuple[Work, Event]]) -> None:
        """Streams whose choice is done, whose client left, or whose time is up leave now."""
        now = time.monotonic()
        for key, work in list(self.running.items()):
            choice = work.choices[key[1]]
            if not choice.done and (work.cancelled or now > work.deadline):
                self._finish(work, choice, "cancelled" if work.cancelled else "time_limit", outgoing)
            if choice.done:
                self.sets[work.direction].remove(key)
                del self.running[key]

    def _shut(self, outgoing: list[tuple[Work, Event]], why: str, reason: str = "shutdown",
              waiting: bool = True) -> None:
        """End every running stream with ``reason``; answer the scores (and, with ``waiting``, the
        queued work) with ``why``."""
        for key, work in list(self.running.items()):
            choice = work.choices[key[1]]
            if not choice.done:
                self._finish(work, choice, reason, outgoing)
        self.running.clear()
        with self.condition:
            waiting_work = list(self.pending) if waiting else []
            if waiting:
                self.pending.clear()
        waiting_work += [score for score, _ in self.scores]
        self.scores.clear()
        for work in waiting_work:
            outgoing.append((work, ("error", 0, why)))

    @staticmethod
    def _deliver(outgoing: list[tuple[Work, Event]]) -> None:
        """Every event of this tick, handed to the event loop in one call per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Work, Event]]] = {}
        for work, event in outgoing:
            by_loop.setdefault(work.loop, []).append((work, event))
        for loop, events in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, events)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass


def _put_all(events: list[tuple[Work, Event]]) -> None:
    for work, event in events:
        work.queue.put_nowait(event)
