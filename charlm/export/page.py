"""A model as one HTML page that writes offline in any browser: its weights inside, its step in JavaScript.

The page (charlm/export/writer.html) carries the model's card and weights as JSON with base64
arrays (float32, or float16 at half the size), runs the same step as ``charlm.export.graph.Step`` in
plain JavaScript — a few matrix-vector products per character, which a browser runs at hundreds of
characters a second for a 2x512 LSTM with nothing to download — and exposes
``window.charlm.probabilities(prompt)`` for tests and other scripts.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from charlm.export.card import model_card
from charlm.export.graph import Step
from charlm.fsutil import atomic_write_text

PLACEHOLDER = "/*CHARLM_MODEL*/null"


def _array(tensor: Any, float16: bool) -> dict[str, Any]:
    values = tensor.detach().cpu().numpy().astype(np.float16 if float16 else np.float32)
    return {"shape": list(values.shape), "data": base64.b64encode(values.tobytes()).decode("ascii")}


def page_model(lm: Any, direction: str, float16: bool = False) -> dict[str, Any]:
    """The card and the weights of one direction, as the page reads them."""
    step = Step(lm.model, direction)
    layers = []
    for layer in range(step.layers):
        w_ih, w_hh, b_ih, b_hh = step.weights(layer)
        layers.append({name: _array(value, float16) for name, value in
                       (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)) if value is not None})
    residual = {name: _array(value, float16) for name, value in step.named_buffers()
                if name.startswith(("norm_", "ffn_")) and value is not None}
    return {"card": model_card(lm, direction), "dtype": "float16" if float16 else "float32",
            "embedding": _array(step.embedding, float16), "layers": layers, "residual": residual,
            "head_weight": _array(step.head_weight, float16), "head_bias": _array(step.head_bias, float16)}


def render(model: dict[str, Any], title: str) -> str:
    template = resources.files("charlm.export").joinpath("writer.html").read_text(encoding="utf-8")
    # "</" never appears inside the script, so the JSON cannot end it early.
    payload = json.dumps(model, separators=(",", ":")).replace("</", "<\\/")
    return template.replace("CHARLM_TITLE", title.replace("<", "&lt;")).replace(PLACEHOLDER, payload)


def write_html(lm: Any, direction: str, output: Path, float16: bool = False) -> None:
    name = Path(lm.path).parent.name if Path(lm.path).stem in ("best", "last") else Path(lm.path).stem
    atomic_write_text(output, render(page_model(lm, direction, float16), name))
