"""A model's one-character step as an ONNX graph, its card in the metadata.

The step is written out as plain tensor operations (``Step``: every cell, plain or residual blocks),
the same function as ``CharRNN.forward`` one character at a time in eval mode, and exported with torch's TorchScript-based
exporter (``dynamo=False``). On the pinned torch both exporters give a correct graph for every cell;
the ``torch.export``-based one takes seconds more per model and needs the onnxscript package, so
charlm keeps the other while torch ships it (it warns that it is deprecated; the warning is not the
user's to act on). tests/export/test_export.py checks onnxruntime against ``CharRNN``.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from charlm.export.card import model_card, state_names
from charlm.fsutil import atomic_write_bytes
from charlm.model.cells import MIN_CELLS, ResidualStack, min_step
from charlm.model.network import CharRNN, recurrent_weights

OPSET = 17


class Step(nn.Module):
    """One step of one direction of a ``CharRNN``: ``(tokens, h[, c]) -> (logits, h[, c])``, with
    ``h`` and ``c`` of shape (layers, batch, hidden); a min cell with ``input_conv`` K carries
    ``x1`` … ``x{K-1}`` (the inputs each layer read last) in place of ``c``. A residual block's norms and GELU are written
    out too (``norm``, ``gelu``), so the page's JavaScript can follow the same lines."""

    NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

    def __init__(self, model: CharRNN, direction: str = "forward"):
        super().__init__()
        stack, head = model.stack_and_head(direction)
        self.cell, self.layers, self.residual = model.cell, model.num_layers, model.block == "residual"
        self.embedding = nn.Parameter(model.embedding.weight.detach().float().clone(), requires_grad=False)
        for layer in range(self.layers):
            for name, value in recurrent_weights(stack, layer).items():
                self._keep(f"{name}_{layer}", value)
        self.norm_kind = model.norm
        for name, value in residual_weights(stack).items():
            self._keep(name, value)
        self._keep("head_weight", head.weight)
        self._keep("head_bias", head.bias)

    def _keep(self, name: str, value: torch.Tensor | None) -> None:
        self.register_buffer(name, None if value is None else value.detach().float().clone())

    def weights(self, layer: int) -> tuple[torch.Tensor | None, ...]:
        return tuple(getattr(self, f"{name}_{layer}") for name in self.NAMES)

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if self.norm_kind == "layer":
            mean = x.mean(-1, keepdim=True)
            x = (x - mean) / torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + 1e-5)
            return x * getattr(self, f"{name}_weight") + getattr(self, f"{name}_bias")
        if self.norm_kind == "rms":
            return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * getattr(self, f"{name}_weight")
        return x

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, *rest: torch.Tensor) -> Any:
        c, past = (rest[0] if rest else None, ()) if self.cell == "lstm" else (None, rest)
        x = self.embedding[tokens]
        new_h, new_c, new_past = [], [], []
        for layer in range(self.layers):
            w_ih, w_hh, b_ih, b_hh = self.weights(layer)
            read = self.norm(x, f"norm_cell_{layer}") if self.residual else x
            reads = [read, *(p[layer] for p in past)]  # x_t, x_{t-1}, …: what a convolving layer's gates read
            new_past.append(reads[:-1])
            gi = (torch.cat(reads, dim=-1) if past else read) @ w_ih.t() + b_ih
            gh = None if w_hh is None else h[layer] @ w_hh.t() + b_hh
            out, cell = self.cell_step(gi, gh, h[layer], None if c is None else c[layer])
            new_h.append(out)
            if cell is not None:
                new_c.append(cell)
            x = self.add_block(layer, x, out) if self.residual else out
        if self.residual:
            x = self.norm(x, "norm_final")
        logits = x @ self.head_weight.t() + self.head_bias
        if self.cell == "lstm":
            return logits, torch.stack(new_h), torch.stack(new_c)
        return logits, torch.stack(new_h), *(torch.stack([r[k] for r in new_past]) for k in range(len(past)))

    def cell_step(self, gi: torch.Tensor, gh: torch.Tensor | None, h: torch.Tensor,
                  c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cell == "lstm":  # torch's gate order: input, forget, cell, output
            i, f, g, o = (gi + gh).chunk(4, dim=1)
            cell = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(cell), cell
        if self.cell == "gru":  # reset, update, new; the reset gate scales W_hn h + b_hn
            ir, iz, inn = gi.chunk(3, dim=1)
            hr, hz, hn = gh.chunk(3, dim=1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            return (1 - z) * torch.tanh(inn + r * hn) + z * h, None
        if self.cell in MIN_CELLS:  # the gates read the input alone
            return min_step(self.cell, gi, h), None
        return (torch.tanh(gi + gh) if self.cell == "rnn_tanh" else torch.relu(gi + gh)), None

    def add_block(self, layer: int, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        x = x + out
        if getattr(self, f"ffn_in_weight_{layer}") is None:
            return x
        inner = self.norm(x, f"norm_ffn_{layer}") @ getattr(self, f"ffn_in_weight_{layer}").t() \
            + getattr(self, f"ffn_in_bias_{layer}")
        return x + gelu(inner) @ getattr(self, f"ffn_out_weight_{layer}").t() + getattr(self, f"ffn_out_bias_{layer}")


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh form, as ``nn.GELU(approximate="tanh")`` computes it."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def residual_weights(stack: nn.Module) -> dict[str, torch.Tensor | None]:
    """A residual stack's norms and feed-forward weights by flat name (none for a plain stack)."""
    if not isinstance(stack, ResidualStack):
        return {}
    found: dict[str, torch.Tensor | None] = {}
    norms = [(f"norm_cell_{k}", b.norm_cell) for k, b in enumerate(stack.layers)]
    norms += [(f"norm_ffn_{k}", b.norm_ffn) for k, b in enumerate(stack.layers)] + [("norm_final", stack.norm)]
    for name, norm in norms:
        found[f"{name}_weight"] = getattr(norm, "weight", None)
        found[f"{name}_bias"] = getattr(norm, "bias", None)
    for k, block in enumerate(stack.layers):
        ffn = block.ffn
        for part, index in (("in", 0), ("out", 2)):
            found[f"ffn_{part}_weight_{k}"] = None if ffn is None else ffn[index].weight
            found[f"ffn_{part}_bias_{k}"] = None if ffn is None else ffn[index].bias
    return found


def step_graph(model: CharRNN, direction: str = "forward") -> bytes:
    """The serialised ONNX model of ``Step(model, direction)``, batch size dynamic."""
    step = Step(model.cpu().eval(), direction).eval()
    names = state_names(model)
    tokens = torch.zeros(2, dtype=torch.long)
    args = (tokens, *(torch.zeros(model.num_layers, 2, model.hidden_size) for _ in names))
    inputs, outputs = ["tokens", *names], ["logits", *(f"{name}_out" for name in names)]
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
