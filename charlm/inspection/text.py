"""Read a text with a model, character by character: surprisal, top predictions, hidden units.

``trace`` runs the model over the text once (``FastStep``, one character at a time) and keeps,
for every character, the probability the model gave it before reading it, its five most likely
predictions, and every hidden unit's value after reading it. ``render_html`` turns that into a
self-contained page (inline CSS, no script, no network); ``rank_units`` finds the units that
follow a feature of the text, such as "inside parentheses".
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from charlm.data.vocab import MARKER, Vocab
from charlm.errors import CharlmError
from charlm.model.fast_step import FastStep
from charlm.model.network import CharRNN

if TYPE_CHECKING:
    from charlm.data.base import RunData

TOP = 5
SURPRISAL_STEP = 0.5  # nats per colour band
SURPRISAL_BANDS = 10  # the last band holds everything from 4.5 nats up
ACTIVATION_BANDS = 11  # -1 … +1

# Named features for --find-units; anything else is taken as a regular expression.
FEATURES = {
    "quotes": ("inside double quotes", r'"[^"\n]*"'),
    "single-quotes": ("inside single quotes", r"'[^'\n]*'"),
    "parens": ("inside parentheses", r"\([^()]*\)"),
    "brackets": ("inside square brackets", r"\[[^\[\]]*\]"),
    "line-position": ("position in the line (characters since the last line break)", None),
    "capitals": ("capital letters", r"[A-Z]"),
    "line-start": ("first word of a line", r"(?m)^\S*"),
}


@dataclass
class Trace:
    """What the model made of each character of ``text``.

    ``surprisal[i]`` = −log p(text[i]) before reading it (NaN where the model made no prediction:
    the first character of a stream, or a character outside its vocabulary); ``top[i]`` its five
    likeliest predictions there; ``states[i]`` = (layers, hidden) values after reading text[i].
    In lines mode a line break stands for the end marker: its surprisal is that of ending the line.
    """

    text: str
    surprisal: np.ndarray
    top: list[list[tuple[str, float]]]
    states: np.ndarray
    state_name: str

    @property
    def known(self) -> np.ndarray:
        return ~np.isnan(self.surprisal)


def trace(model: CharRNN, vocab: Vocab, kind: "type[RunData]", text: str, state_name: str = "h") -> Trace:
    """Read ``text`` one character at a time as a model of ``kind`` of data reads it (the state carried
    through, or, of a list, restarted at each line) and record surprisal, top predictions and hidden
    states (``h``, or ``c`` of an LSTM)."""
    if state_name == "c" and model.cell != "lstm":
        raise CharlmError(f"--state c needs an LSTM (its cell state); this model is a {model.cell}: use --state h")
    step = FastStep(model.eval())
    size = len(text)
    surprisal = np.full(size, np.nan)
    top: list[list[tuple[str, float]]] = [[] for _ in range(size)]
    states = np.zeros((size, model.num_layers, model.hidden_size), dtype=np.float32)
    which = 1 if state_name == "c" else 0
    fresh = model.initial_state(1, model.head.weight.device)
    opening, (line_break, restart) = kind.opening(vocab), kind.line_break(vocab)
    state = step.import_state(fresh)
    log_probs = _read_all(step, state, opening)
    for i, ch in enumerate(text):
        target = line_break if ch == "\n" else vocab.index.get(ch)
        if log_probs is not None and target is not None:
            surprisal[i] = -float(log_probs[target])
            values, ids = log_probs.topk(min(TOP, len(vocab)))
            top[i] = [(vocab.chars[j], math.exp(v)) for v, j in zip(values.tolist(), ids.tolist())]
        if ch == "\n" and restart:  # a new line starts from a fresh state, as in training
            state = step.import_state(fresh)
            log_probs = _read_all(step, state, opening)
        elif target is not None:
            log_probs = _read(step, state, target)
        # Unknown characters are not read: the state and the pending prediction carry over them.
        states[i] = torch.stack([layer[which][0] for layer in state.layers]).float().cpu().numpy()
    return Trace(text=text, surprisal=surprisal, top=top, states=states, state_name=state_name)


def _read_all(step: FastStep, state, tokens: list[int]) -> torch.Tensor | None:
    log_probs = None
    for token in tokens:
        log_probs = _read(step, state, token)
    return log_probs


def _read(step: FastStep, state, token: int) -> torch.Tensor:
    logits = step(torch.tensor([token], device=state.device), state)[0]
    return torch.log_softmax(logits.cpu().double(), dim=0)  # on the CPU: MPS has no float64


def feature_values(text: str, feature: str) -> tuple[np.ndarray, str]:
    """One value per character for a named feature (see ``FEATURES``) or a regular expression
    (1 inside a match, else 0), and a description of it."""
    description, pattern = FEATURES.get(feature, (None, feature))
    values = np.zeros(len(text))
    if feature == "line-position":
        column = 0
        for i, ch in enumerate(text):
            values[i] = column
            column = 0 if ch == "\n" else column + 1
        return values, description
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise CharlmError(f"--find-units {feature!r} is not a valid regular expression ({exc}); use one, or a"
                          f" named feature: {', '.join(FEATURES)}") from None
    for match in compiled.finditer(text):
        values[match.start():match.end()] = 1.0
    return values, description or f"inside a match of /{pattern}/"


def read_prefix(path: str | Path, encoding: str = "utf-8", max_chars: int = 5000) -> str:
    """The first ``max_chars`` characters of a text file (not empty)."""
    from charlm.data.source import check_text_file, read_text

    text = read_text(check_text_file(path), encoding)[:max_chars]
    if not text:
        raise CharlmError(f"{path} is empty: give a text to read")
    return text


def choose_layer(model: CharRNN, layer: int | None, unit: int | None) -> int:
    """The layer to look at (default: the last), with ``unit`` checked against its width."""
    layers, hidden = model.num_layers, model.hidden_size
    layer = layers - 1 if layer is None else layer
    if not 0 <= layer < layers:
        raise CharlmError(f"--layer {layer} is out of range: this model has layers 0 to {layers - 1}")
    if unit is not None and not 0 <= unit < hidden:
        raise CharlmError(f"--cell {unit} is out of range: layer {layer} has units 0 to {hidden - 1}")
    return layer


@dataclass
class UnitScore:
    layer: int
    unit: int
    correlation: float


def rank_units(result: Trace, values: np.ndarray, count: int = 10) -> list[UnitScore]:
    """Hidden units ranked by how closely they follow ``values`` (|Pearson correlation| over the
    characters the model read)."""
    known = result.known
    if values[known].std() == 0:
        raise CharlmError("the feature has the same value at every character of the text: choose a text where it"
                          " varies, or another feature")
    states = result.states[known].reshape(int(known.sum()), -1).astype(np.float64)
    centred = states - states.mean(0)
    target = values[known] - values[known].mean()
    spread = np.sqrt((centred ** 2).sum(0) * (target ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.where(spread > 0, centred.T @ target / spread, 0.0)
    order = np.argsort(-np.abs(correlation), kind="stable")[:count]
    hidden = result.states.shape[2]
    return [UnitScore(layer=int(i) // hidden, unit=int(i) % hidden, correlation=float(correlation[i])) for i in order]


def _title(result: Trace, i: int, activation: float | None) -> str:
    ch = result.text[i]
    shown = "end of line" if ch == "\n" else repr(ch)
    parts = []
    if activation is not None:
        parts.append(f"unit value {activation:+.3f}")
    if np.isnan(result.surprisal[i]):
        parts.append(f"{shown}: no prediction (first character, or one the model does not know)")
    else:
        p = float(np.exp(-result.surprisal[i]))
        parts.append(f"{shown}: p = {p:.3f}, surprisal {result.surprisal[i]:.2f} nats")
        parts.append("top: " + ", ".join(f"{_shown(c)} {q:.3f}" for c, q in result.top[i]))
    return "\n".join(parts)


def _shown(ch: str) -> str:
    return "⏎" if ch in ("\n", MARKER) else ch


def render_html(result: Trace, title: str, unit: tuple[int, int] | None = None) -> str:
    """A self-contained HTML page: one ``<span>`` per character, coloured by surprisal or, with
    ``unit`` = (layer, index), by that hidden unit's value; hovering shows the details."""
    if unit is not None:
        values = result.states[:, unit[0], unit[1]].astype(np.float64)
        scale = max(1.0, float(np.abs(values).max()))  # tanh units stay in [-1, 1]; relu ones may not
        bands = np.clip(np.round((values / scale + 1) / 2 * (ACTIVATION_BANDS - 1)), 0, ACTIVATION_BANDS - 1)
    else:
        values = None
        bands = np.clip(np.floor(np.nan_to_num(result.surprisal, nan=-1) / SURPRISAL_STEP), -1, SURPRISAL_BANDS - 1)
    spans = []
    for i, ch in enumerate(result.text):
        band = int(bands[i])
        css = ("a" if unit is not None else "s") + (str(band) if band >= 0 else "x")
        if ch == "\n":
            css += " nl"
        title_text = _title(result, i, None if values is None else float(values[i]))
        spans.append(f'<span class="c {css}" title="{html.escape(title_text)}">{html.escape(ch)}</span>')
    known = result.known
    mean = float(result.surprisal[known].mean()) if known.any() else float("nan")
    if unit is not None:
        legend = (f"Colour: the value of hidden unit {unit[1]} of layer {unit[0]} ({result.state_name}) after reading each"
                  " character: blue negative, white zero, red positive.")
    else:
        legend = (f"Colour: surprisal −log p of each character before the model read it, from white (0 nats) to dark"
                  f" red ({SURPRISAL_STEP * (SURPRISAL_BANDS - 1):g}+ nats); grey: no prediction.")
    summary = f"{len(result.text):,} characters; mean surprisal {mean:.3f} nats/char ({mean / np.log(2):.3f} bits)."
    return _PAGE.format(title=html.escape(title), legend=html.escape(legend), summary=html.escape(summary),
                        styles=_styles(), body="".join(spans))


def surprisal_styles() -> str:
    """CSS classes ``s0`` … ``s9``: the red shades of surprisal bands (also the server's playground)."""
    return "\n".join(f".s{band} {{ background: rgba(220, 30, 30, {(band + 0.5) / SURPRISAL_BANDS:.2f}); }}"
                     for band in range(SURPRISAL_BANDS))


def _styles() -> str:
    rules = [".sx, .ax { background: #e6e6e6; }", surprisal_styles()]
    middle = (ACTIVATION_BANDS - 1) / 2
    for band in range(ACTIVATION_BANDS):
        strength = abs(band - middle) / middle
        colour = "220, 40, 40" if band > middle else "40, 90, 220"
        rules.append(f".a{band} {{ background: rgba({colour}, {strength:.2f}); }}")
    return "\n".join(rules)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
.text {{ font-family: monospace; font-size: 15px; line-height: 1.7; white-space: pre-wrap; word-break: break-all; }}
.c {{ border-radius: 2px; }}
.nl::before {{ content: "\\23CE"; color: #999; }}
{styles}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{legend} Hover over a character for its probability and the model's top-5 predictions.</p>
<p>{summary}</p>
<div class="text">{body}</div>
</body>
</html>
"""


@dataclass
class UnitSearch:
    """The units that follow a feature of a text best (``find_units``)."""

    description: str
    extent: str  # how much of the text the feature covers
    ranking: list[UnitScore]

    def table(self, state_name: str) -> str:
        lines = [f"units tracking {self.description} ({self.extent}), by correlation of {state_name} with it:",
                 f"{'rank':>4}  {'layer':>5}  {'unit':>5}  correlation"]
        lines += [f"{rank:>4}  {score.layer:>5}  {score.unit:>5}  {score.correlation:+.3f}"
                  for rank, score in enumerate(self.ranking, 1)]
        return "\n".join(lines)


def find_units(result: Trace, feature: str, count: int = 10) -> UnitSearch:
    """The ``count`` units whose values follow ``feature`` (see ``feature_values``) most closely."""
    values, description = feature_values(result.text, feature)
    binary = set(np.unique(values)) <= {0.0, 1.0}
    size = len(result.text)
    extent = f"{int(values.sum()):,} of {size:,} characters" if binary else f"{size:,} characters"
    return UnitSearch(description, extent, rank_units(result, values, count))
