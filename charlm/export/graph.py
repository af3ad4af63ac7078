"""A model's one-character step as an ONNX graph, its card in the metadata.

The step is written out as plain tensor operations (``Step``), the same function as
``CharRNN.forward`` one character at a time in eval mode, and exported with torch's TorchScript-based
exporter (``dynamo=False``). On the pinned torch both exporters give a correct graph for every cell;
the ``torch.export``-based one takes seconds more per model and needs the onnxscript package, so
charlm keeps the other while torch ships it (it warns that it is deprecated; the warning is not the
user's to act on). tests/test_export.py checks onnxruntime against ``CharRNN``.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from charlm.export import model_card
from charlm.fsutil import atomic_write_bytes
from charlm.model import CharRNN

OPSET = 17


class Step(nn.Module):
    """One step of one direction of a ``CharRNN``: ``(tokens, h[, c]) -> (logits, h[, c])``, with
    ``h`` and ``c`` of shape (layers, batch, hidden)."""

    def __init__(self, model: CharRNN, direction: str = "forward"):
        super().__init__()
        stack, head = model.stack_and_head(direction)
        self.cell, self.layers = model.cell, model.num_layers
        self.embedding = nn.Parameter(model.embedding.weight.detach().float().clone(), requires_grad=False)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            for layer in range(self.layers):
                value = getattr(stack, f"{name}_l{layer}").detach().float().clone()
                self.register_buffer(f"{name}_{layer}", value)
        self.register_buffer("head_weight", head.weight.detach().float().clone())
        self.register_buffer("head_bias", head.bias.detach().float().clone())

    def weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"{name}_{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None) -> Any:
        x = self.embedding[tokens]
        new_h, new_c = [], []
        for layer in range(self.layers):
            w_ih, w_hh, b_ih, b_hh = self.weights(layer)
            gi, gh = x @ w_ih.t() + b_ih, h[layer] @ w_hh.t() + b_hh
            if self.cell == "lstm":  # torch's gate order: input, forget, cell, output
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                cell = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(cell)
                new_c.append(cell)
            elif self.cell == "gru":  # reset, update, new; the reset gate scales W_hn h + b_hn
                ir, iz, inn = gi.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = torch.tanh(inn + r * hn)
                x = (1 - z) * n + z * h[layer]
            else:
                x = torch.tanh(gi + gh) if self.cell == "rnn_tanh" else torch.relu(gi + gh)
            new_h.append(x)
        logits = x @ self.head_weight.t() + self.head_bias
        if self.cell == "lstm":
            return logits, torch.stack(new_h), torch.stack(new_c)
        return logits, torch.stack(new_h)


def step_graph(model: CharRNN, direction: str = "forward") -> bytes:
    """The serialised ONNX model of ``Step(model, direction)``, batch size dynamic."""
    step = Step(model.cpu().eval(), direction).eval()
    lstm = model.cell == "lstm"
    state = torch.zeros(model.num_layers, 2, model.hidden_size)
    tokens = torch.zeros(2, dtype=torch.long)
    args = (tokens, state, state.clone()) if lstm else (tokens, state)
    inputs, outputs = ["tokens", "h", "c"][:len(args)], ["logits", "h_out", "c_out"][:len(args)]
    axes = {name: {0: "batch"} for name in ("tokens", "logits")}
    axes.update({name: {1: "batch"} for name in inputs[1:] + outputs[1:]})
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(step, args, buffer, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def write_onnx(lm: Any, direction: str, output: Path) -> None:
    import onnx

    graph = onnx.load_from_string(step_graph(lm.model, direction))
    card = model_card(lm, direction)
    for key, value in (("charlm", json.dumps(card)), ("vocab", json.dumps(card["vocab"])), ("cell", card["cell"])):
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name, graph.doc_string = "charlm", f"charlm {card['cell']} step, {direction}; metadata 'charlm'"
    atomic_write_bytes(output, graph.SerializeToString())
