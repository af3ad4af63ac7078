"""Write text with a model exported by `charlm export RUN --format onnx`: onnxruntime and numpy, nothing else.

    pip install onnxruntime numpy
    python examples/onnx_sample.py model.onnx --prime "ROMEO:" --length 300 --temperature 0.8 --seed 1

Everything the program needs is in the file: the step graph, ``(tokens, h[, c]) -> (logits, h[, c])``,
and its metadata (key "charlm": the vocabulary, the line and document markers, the cell and sizes).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime


class Model:
    """An exported step and its card; ``read`` feeds token ids, ``next`` gives the next distribution."""

    def __init__(self, path: str):
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.card = json.loads(self.session.get_modelmeta().custom_metadata_map["charlm"])
        self.vocab = self.card["vocab"]
        self.index = {ch: i for i, ch in enumerate(self.vocab)}
        self.markers = {self.card["line_marker"], self.card["document_marker"]} - {None}

    def fresh(self) -> dict[str, np.ndarray]:
        shape = (self.card["num_layers"], 1, self.card["hidden_size"])
        return {name: np.zeros(shape, dtype=np.float32) for name in self.card["state"]}

    def read(self, state: dict[str, np.ndarray], token: int) -> np.ndarray:
        """Feed one token; returns the logits for the next one and updates ``state``."""
        outputs = self.session.run(None, {"tokens": np.array([token], dtype=np.int64), **state})
        for name, value in zip(self.card["state"], outputs[1:]):
            state[name] = value
        return outputs[0][0].astype(np.float64)

    def start(self, prime: str) -> list[int]:
        """How charlm starts a text: a list's line marker first; with no prime a new document, else a newline."""
        unknown = sorted(set(prime) - self.index.keys())
        if unknown:
            raise SystemExit(f"error: the prime has characters the model never saw: {unknown}")
        ids = [self.index[c] for c in prime]
        if self.card["mode"] == "lines":
            return [self.card["line_marker"]] + ids
        if ids:
            return ids
        if self.card["document_marker"] is not None:
            return [self.card["document_marker"]]
        return [self.index.get("\n", self.index.get(" ", 0))]


def distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Probabilities from logits at ``temperature``, keeping the ``top_k`` likeliest and the nucleus ``top_p``."""
    scaled = logits / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = np.ones_like(probs, dtype=bool)
    if 0 < top_k < len(probs):
        keep[order[top_k:]] = False
    if top_p < 1.0:
        before = np.cumsum(probs[order]) - probs[order]  # a token goes once the mass before it reaches top_p
        keep[order[before >= top_p]] = False
    probs = np.where(keep, probs, 0.0)
    return probs / probs.sum()


def probabilities(model: Model, prime: str, temperature: float = 1.0) -> np.ndarray:
    """The next character's distribution after ``prime``, in the vocabulary's order."""
    state, logits = model.fresh(), None
    for token in model.start(prime):
        logits = model.read(state, token)
    return distribution(logits, temperature)


def write(model: Model, prime: str, length: int, temperature: float, top_k: int, top_p: float,
          seed: int | None) -> str:
    """``prime`` and up to ``length`` characters after it (one line, for a list)."""
    rng = np.random.default_rng(seed)
    state, logits = model.fresh(), None
    for token in model.start(prime):
        logits = model.read(state, token)
    made = []
    for _ in range(length):
        token = int(rng.choice(len(logits), p=distribution(logits, temperature, top_k, top_p)))
        if token == model.card["line_marker"]:
            break
        if token not in model.markers:
            made.append(model.vocab[token])
        logits = model.read(state, token)
    return prime + "".join(made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .onnx file from `charlm export --format onnx`")
    parser.add_argument("--prime", default="")
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    if args.temperature <= 0 or not 0 < args.top_p <= 1:
        raise SystemExit("error: --temperature must be > 0 and --top-p in (0, 1]")
    model = Model(args.model)
    sys.stdout.write(write(model, args.prime.replace("\\n", "\n"), args.length, args.temperature, args.top_k,
                           args.top_p, args.seed) + "\n")


if __name__ == "__main__":
    main()
