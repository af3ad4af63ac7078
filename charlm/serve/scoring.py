"""How likely is a text? Each character's log-probability under a model, read a chunk at a time.

The text is read as ``charlm inspect text`` reads it (``charlm.inspection.text.trace``): after the
kind's opening, the state carried through, or of a list model restarted at each line, where a line
break stands for the end marker. Characters the model never saw are reported and skipped: the state
and the pending prediction carry over them. Reading in chunks of the fused kernel lets the engine
tick its streams between two chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from charlm.data.vocab import Vocab
from charlm.model.network import CharRNN

if TYPE_CHECKING:
    from charlm.data.base import RunData


@dataclass
class Scored:
    """Per character: its log-probability (None where the model made no prediction: the first
    character of a stream, or an unknown one) and, if asked, the top alternatives."""

    chars: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        scored = [c["logprob"] for c in self.chars if c["logprob"] is not None]
        loss = -sum(scored) / len(scored) if scored else None
        return {"characters": self.chars, "scored": len(scored), "loss": loss,
                "bits_per_char": loss / math.log(2) if loss is not None else None, "unknown": self.unknown}


def score(model: CharRNN, vocab: Vocab, kind: "type[RunData]", text: str, top: int = 0,
          chunk: int = 512) -> Iterator[None]:
    """A generator: each ``next`` reads at most ``chunk`` tokens (the engine ticks its streams between
    two, so a long text never stalls them); its return value is the ``Scored``."""
    opening, (line_break, restart) = kind.opening(vocab), kind.line_break(vocab)
    result = Scored()
    for i, ch in enumerate(text):
        result.chars.append({"char": ch, "logprob": None})
        if ch != "\n" and ch not in vocab.index:
            result.unknown.append({"index": i, "char": ch})
    # Segments: runs of (text index, token) read from one fresh state (of a list: a line each).
    segments: list[list[tuple[int, int]]] = [[]]
    for i, ch in enumerate(text):
        token = line_break if ch == "\n" else vocab.index.get(ch)
        if token is not None:
            segments[-1].append((i, token))
        if ch == "\n" and restart:
            segments.append([])
    device = model.head.weight.device
    for segment in segments:
        tokens = opening + [token for _, token in segment]
        positions = [None] * len(opening) + [i for i, _ in segment]
        state, pending = None, None  # pending: log-probabilities for the next token
        for start in range(0, len(tokens), chunk):
            piece = tokens[start:start + chunk]
            with torch.no_grad():
                logits, state = model(torch.tensor([piece], device=device), state)
            log_probs = torch.log_softmax(logits[0].double().cpu(), dim=-1)
            for offset, token in enumerate(piece):
                before = pending if offset == 0 else log_probs[offset - 1]
                if before is not None:
                    _record(result, positions[start + offset], before, token, vocab, top)
            pending = log_probs[-1]
            yield None
    return result


def _record(result: Scored, position: int | None, log_probs: torch.Tensor, token: int, vocab: Vocab, top: int) -> None:
    if position is None:
        return
    entry = result.chars[position]
    entry["logprob"] = float(log_probs[token])
    if top:
        values, ids = log_probs.topk(min(top, len(vocab)))
        entry["top"] = [{"char": vocab.chars[j], "logprob": v} for v, j in zip(values.tolist(), ids.tolist())]
