"""Many generation streams of one model, advanced together: one character per stream per tick.

``StreamSet`` is what both ``charlm sample`` (through ``charlm.generate.sample.generate``) and the server's
engine run, so a seed gives one text wherever it is drawn. Each stream has its own sampling
settings (``Draw``) and its own random generator; streams join (their prime read by the fused
kernel, alone) and leave between ticks.

A stream's arithmetic never depends on the others. BLAS rounds a row differently at different row
counts only across its kernel families (on MKL: 1-3 rows take a matrix-vector path, 4 or more a
matrix-matrix one whose rows agree at every count; tests/generate/test_streams.py checks it), so every
kernel call here has at least ``ROW_BLOCK`` rows, padded. Where a device's rows do not agree at
some count (``rows_agree`` says, the first time that count runs), the call is cut into blocks of
exactly ``ROW_BLOCK`` rows instead. Elementwise steps and sampling work row by row.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass

import torch

from charlm.model.fast_step import FastStep, choose_layout
from charlm.model.network import CharRNN
from charlm.runtime import accumulator_dtype

ROW_BLOCK = 4
# Primes up to this long are read by torch's own recurrent kernel, longer ones by oneDNN's: on the
# CPU oneDNN's costs ~10 ms of set-up a call and wins only past a few dozen characters
# (docs/serve.md). The choice is a function of the length alone, so every reader of a prime agrees.
SHORT_PRIME = 32
_kernel_switch = threading.Lock()  # the switch is process-wide: one prime read at a time
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads consecutive stream numbers over the seed space


def stream_seed(seed: int | None, index: int) -> int | None:
    """The seed of stream ``index`` of a request (or of ``charlm sample -n``) seeded with ``seed``:
    stream 0 keeps the seed itself, the others get seeds far from it and from each other."""
    if seed is None:
        return None
    return seed if index == 0 else (seed + index * _GOLDEN) % 2**64


@dataclass(frozen=True)
class Draw:
    """How one stream draws its characters: ``temperature`` > 0, ``top_k`` (0: off), ``top_p``
    (1: off), ``greedy``, ``seed`` (None: a fresh random one), and ``logprobs`` (how many top
    alternatives to report per character; 0: none)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    seed: int | None = None
    logprobs: int = 0


@dataclass
class Drawn:
    """One stream's character of a tick: its id, and with ``Draw.logprobs`` its log-probability and
    the top alternatives (ids and log-probabilities, most likely first)."""

    key: Hashable
    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def filter_rows(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Keep each row's ``top_k`` most likely tokens (0: all) and its nucleus of mass ``top_p`` (1:
    all); the others get -inf. Rows asking for neither come back untouched."""
    vocab = logits.shape[1]
    k = [value if 0 < value < vocab else vocab for value in top_k]
    if all(value == vocab for value in k) and all(p >= 1.0 for p in top_p):
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    ranks = torch.arange(vocab, device=logits.device).expand_as(logits)
    drop_sorted = ranks >= torch.tensor(k, device=logits.device).unsqueeze(1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Drop a token when the mass before it already reaches top_p; the first always stays.
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted |= mass_before >= torch.tensor(top_p, device=logits.device).unsqueeze(1)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def draw_rows(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token id per row of ``logits`` (rows, vocab), placing ``uniform[row]`` in [0, 1) in the
    row's cumulative distribution (inverse-CDF: a third of ``torch.multinomial``'s cost at one row).

    A token of probability zero is never drawn: its cumulative sum equals its predecessor's. A draw
    rounded up to the total is pulled back to the last token that has any probability.
    """
    dtype = uniform.dtype
    cdf = torch.softmax(logits, dim=-1, dtype=dtype).cumsum_(dim=-1)
    total = cdf[:, -1:].contiguous()
    ids = torch.searchsorted(cdf, uniform.unsqueeze(1) * total, right=True)
    last_possible = torch.searchsorted(cdf, total, right=False)  # the first index where the sum is complete
    return torch.minimum(ids, last_possible).squeeze(1)


def read_prime(model: CharRNN, prime: list[int], direction: str) -> tuple[torch.Tensor, tuple]:
    """The model's logits and state after ``prime`` (token ids), read in one call of a fused kernel."""
    ids = torch.tensor([prime], dtype=torch.long, device=model.head.weight.device)
    with _kernel_switch:
        was = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = was and len(prime) > SHORT_PRIME
        try:
            return model(ids, direction=direction)
        finally:
            torch.backends.mkldnn.enabled = was


def padded(rows: int) -> int:
    return max(ROW_BLOCK, -(-rows // ROW_BLOCK) * ROW_BLOCK)


def rows_agree(step: FastStep, rows: int) -> bool:
    """Whether a row's numbers are the same in one call of ``rows`` rows as in a call of
    ``ROW_BLOCK`` rows (kernels are chosen by shape alone, so random rows tell)."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, step.token_table.shape[0], (rows,), generator=generator)
    tokens = tokens.to(step.token_table.device)
    results = []
    for count in (ROW_BLOCK, rows):
        state = step.zero_state(count)
        for _ in range(2):
            logits = step(tokens[:count], state)
        results.append(logits[:ROW_BLOCK])
    return torch.equal(results[0], results[1])


@dataclass
class _Stream:
    key: Hashable
    draw: Draw
    generator: torch.Generator


class StreamSet:
    """The streams of one direction of ``model``; row ``i`` of the state is ``streams[i]``'s."""

    def __init__(self, model: CharRNN, direction: str = "forward", capacity: int = ROW_BLOCK):
        self.model = model.eval()
        self.direction = direction
        self.device = model.head.weight.device
        self.capacity = padded(capacity)
        self.layout = choose_layout(model, self.capacity, direction)
        self.step = FastStep(model, direction, self.layout)
        self.agree: dict[int, bool] = {ROW_BLOCK: True}  # row counts checked: one call, or blocks of ROW_BLOCK
        self.state = self.step.zero_state(self.capacity)
        self.logits = torch.zeros(self.capacity, model.vocab_size, device=self.device)  # each row's next draw
        self.tokens = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
        self.streams: list[_Stream] = []

    def __len__(self) -> int:
        return len(self.streams)

    @torch.no_grad()
    def add(self, prime: list[int], streams: list[tuple[Hashable, Draw]]) -> None:
        """New streams after ``prime`` (token ids, at least one), read once, alone, by the fused kernel."""
        logits, state = read_prime(self.model, prime, self.direction)
        for key, draw in streams:
            if len(self.streams) == self.capacity:
                self._grow()
            row = len(self.streams)
            self.state.set_row(row, state)
            self.logits[row].copy_(logits[0, -1])
            generator = torch.Generator(device=self.device)
            if draw.seed is None:
                generator.seed()
            else:
                generator.manual_seed(draw.seed)
            self.streams.append(_Stream(key, draw, generator))

    def remove(self, key: Hashable) -> None:
        """Drop a stream; the last row moves into its place (an exact copy: nothing else changes)."""
        row = next(i for i, stream in enumerate(self.streams) if stream.key == key)
        last = len(self.streams) - 1
        if row != last:
            self.state.copy_row(last, row)
            self.logits[row].copy_(self.logits[last])
            self.streams[row] = self.streams[last]
        self.streams.pop()

    def clear(self) -> None:
        self.streams.clear()

    @torch.no_grad()
    def tick(self) -> list[Drawn]:
        """Draw every stream's next character, then read it: each row's next distribution is ready."""
        count = len(self.streams)
        if count == 0:
            return []
        draws = [stream.draw for stream in self.streams]
        temperature = torch.tensor([d.temperature for d in draws], device=self.device).unsqueeze(1)
        logits = self.logits[:count] / temperature
        filtered = filter_rows(logits, [d.top_k for d in draws], [d.top_p for d in draws])
        tokens = self._choose(filtered, draws)
        drawn = self._report(tokens, logits, draws)
        self.tokens[:count] = tokens
        self._advance(padded(count))
        return drawn

    def _advance(self, rows: int) -> None:
        if rows not in self.agree:  # checked the first time this many rows run, before it counts
            self.agree[rows] = rows_agree(self.step, rows)
        calls = [(0, rows)] if self.agree[rows] else [(b, b + ROW_BLOCK) for b in range(0, rows, ROW_BLOCK)]
        for start, stop in calls:
            self.logits[start:stop] = self.step(self.tokens[start:stop], self.state.rows(start, stop))

    def _choose(self, logits: torch.Tensor, draws: list[Draw]) -> torch.Tensor:
        """One uniform number per row from the row's own generator; greedy rows take the most likely
        token (and still advance their generator, so a setting never shifts another's draws)."""
        dtype = accumulator_dtype(logits.device)
        uniform = torch.cat([torch.rand(1, generator=s.generator, dtype=dtype, device=self.device)
                             for s in self.streams])
        ids = draw_rows(logits, uniform)
        greedy = [d.greedy for d in draws]
        if any(greedy):
            ids = torch.where(torch.tensor(greedy, device=self.device), logits.argmax(dim=-1), ids)
        return ids

    def _report(self, tokens: torch.Tensor, logits: torch.Tensor, draws: list[Draw]) -> list[Drawn]:
        keys, ids = [s.key for s in self.streams], tokens.tolist()
        wanted = max(d.logprobs for d in draws)
        if not wanted:
            return [Drawn(key, token) for key, token in zip(keys, ids)]
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # at the stream's temperature, before filters
        chosen = log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1).tolist()
        values, indices = (t.tolist() for t in torch.topk(log_probs, min(wanted, log_probs.shape[1]), dim=-1))
        return [Drawn(key, token, chosen[i], list(zip(indices[i], values[i]))[:draw.logprobs]) if draw.logprobs
                else Drawn(key, token) for i, (key, token, draw) in enumerate(zip(keys, ids, draws))]

    def _grow(self) -> None:
        """Twice the rows; live rows copied."""
        count, old_state, old_logits = len(self.streams), self.state, self.logits
        self.capacity *= 2
        self.state = self.step.zero_state(self.capacity)
        for layer_old, layer_new in zip(old_state.layers, self.state.layers):
            for t_old, t_new in zip(layer_old, layer_new):
                t_new[:count].copy_(t_old[:count])
        self.logits = torch.zeros(self.capacity, old_logits.shape[1], device=self.device)
        self.logits[:count] = old_logits[:count]
        self.tokens = torch.zeros(self.capacity, dtype=torch.long, device=self.device)
