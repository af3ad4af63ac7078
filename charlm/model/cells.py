"""Cells whose gates read only the current input, and the residual block any cell can sit in.

minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201) are the GRU and
the LSTM with the hidden state taken out of the gates:

    minGRU   z = σ(W_z x),  h̃ = W_h x,                  h = (1 − z) ⊙ h_prev + z ⊙ h̃
    minLSTM  f = σ(W_f x),  i = σ(W_i x),  h̃ = W_h x,   h = (f ⊙ h_prev + i ⊙ h̃) / (f + i)

Where a min cell runs: ``MinStack.forward``. Each layer's gates are one matrix product over the whole
window (time × batch rows at once, not one time step after another), and what is left is the linear
recurrence ``h_t = a_t ⊙ h_{t−1} + b_t``: ``linear_scan``, an elementwise loop over time with a
hand-written backward (the same loop run in reverse). bench/scan.py measured it against Heinsen's
log-space scan (``torch.logcumsumexp``) and plain autograd: it is the fastest of the three on a CPU and
exact for gates and candidates of any sign.

``ResidualStack`` is the block around a cell (``model.block: residual``): per layer
``x + cell(norm(x))``, then ``x + ffn(norm(x))`` when ``model.ffn`` > 0, and a final norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from charlm.model.dropout import SequenceDropout, sequence_dropout

MIN_CELLS = ("mingru", "minlstm")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "mingru": 2, "minlstm": 3}  # blocks of hidden_size


class LinearScan(torch.autograd.Function):
    """``h_t = a_t * h_{t-1} + b_t`` over time-major ``a``, ``b`` (time, batch, hidden) from ``h0``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        h = torch.empty_like(b)
        previous = h0
        for t in range(b.shape[0]):
            previous = torch.addcmul(b[t], a[t], previous, out=h[t])
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, h, h0 = ctx.saved_tensors
        grad_b = torch.empty_like(grad_h)
        carry = torch.zeros_like(h0)  # dL/dh_t reaching step t from step t + 1
        for t in reversed(range(grad_h.shape[0])):
            torch.add(grad_h[t], carry, out=grad_b[t])
            carry = grad_b[t] * a[t]
        previous = torch.cat([h0.unsqueeze(0), h[:-1]])
        return grad_b * previous, grad_b, carry


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    return LinearScan.apply(a, b, h0)


def coefficients(cell: str, gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A min cell's ``a`` (what it keeps of h_prev) and ``b`` (what it writes) from its gates."""
    if cell == "mingru":
        z, candidate = gates.chunk(2, dim=-1)
        z = torch.sigmoid(z)
        return 1 - z, z * candidate
    f, i, candidate = gates.chunk(3, dim=-1)
    f, i = torch.sigmoid(f), torch.sigmoid(i)
    total = f + i
    return f / total, i / total * candidate


def min_step(cell: str, gates: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One time step of a min cell: the new ``h`` from this step's gates (batch, gates) and ``h_prev``."""
    a, b = coefficients(cell, gates)
    return a * h + b


class MinStack(nn.Module):
    """Stacked min cells with ``nn.GRU``'s interface: ``(x (batch, time, in), h0 (layers, batch, hidden))
    -> (output (batch, time, hidden), h_n (layers, batch, hidden))``, parameters ``weight_ih_l{k}`` and
    ``bias_ih_l{k}`` (no hidden-to-hidden weights: that is the point).

    With ``input_conv`` K > 1 each layer's gates read its last K inputs, ``[x_t; x_{t-1}; …]`` (QRNN's
    convolution over time, Bradbury et al. 2016), so ``weight_ih_l{k}`` is K inputs wide and the state is
    the tuple ``(h, x_{t-1}, …, x_{t-K+1})`` of the inputs each layer read last, every part (layers,
    batch, hidden): every layer's input must then be as wide as the cells."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 batch_first: bool = True, input_conv: int = 1, locked: bool = False):
        super().__init__()
        if cell not in MIN_CELLS:
            raise ValueError(f"unknown min cell {cell!r}")
        if input_conv > 1 and input_size != hidden_size:
            raise ValueError("input_conv > 1 carries each layer's inputs in the state: input_size must equal hidden_size")
        self.cell, self.hidden_size, self.num_layers, self.dropout = cell, hidden_size, num_layers, dropout
        self.input_conv, self.locked = input_conv, locked  # locked: one dropout mask per sequence
        bound = 1 / math.sqrt(hidden_size)  # torch's recurrent layers' initialisation
        for layer in range(num_layers):
            width = (input_size if layer == 0 else hidden_size) * input_conv
            weight = nn.Parameter(torch.empty(GATES[cell] * hidden_size, width).uniform_(-bound, bound))
            bias = nn.Parameter(torch.empty(GATES[cell] * hidden_size).uniform_(-bound, bound))
            self.register_parameter(f"weight_ih_l{layer}", weight)
            self.register_parameter(f"bias_ih_l{layer}", bias)

    def forward(self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, object]:
        h0, past = (state, ()) if self.input_conv == 1 else (state[0], state[1:])
        x = x.transpose(0, 1)  # time-major: each step of the scan reads one contiguous block
        finals, reads = [], []
        for layer in range(self.num_layers):
            if layer > 0:
                x = sequence_dropout(x, self.dropout, self.locked, self.training, time_dim=0)
            read, last = convolved(x, [p[layer] for p in past])
            reads.append(last)
            gates = F.linear(read, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}"))
            a, b = coefficients(self.cell, _at_least_fp32(gates))  # under autocast too: the sum runs long
            x = linear_scan(a, b, _at_least_fp32(h0[layer]))
            finals.append(x[-1])
        h_n = torch.stack(finals).to(h0.dtype)
        if not past:
            return x.transpose(0, 1), h_n
        carried = tuple(torch.stack([r[k] for r in reads]).to(h0.dtype) for k in range(len(past)))
        return x.transpose(0, 1), (h_n, *carried)


def convolved(x: torch.Tensor, past: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """What a layer's gates read at each step of a time-major window ``x`` (time, batch, width):
    ``[x_t; x_{t-1}; …]`` over the window preceded by ``past`` (``x_{-1}``, ``x_{-2}``, …, each (batch,
    width)), and the inputs it read last, to carry: the window's own ``x_{T-1}``, ``x_{T-2}``, …"""
    if not past:
        return x, []
    length = x.shape[0]
    padded = torch.cat([torch.stack(past[::-1]).to(x.dtype), x])  # x_{-K+1} … x_{-1}, x_0 … x_{T-1}
    start = len(past)
    read = torch.cat([padded[start - k : start - k + length] for k in range(len(past) + 1)], dim=-1)
    return read, [padded[-1 - k] for k in range(len(past))]


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def describe_shape(layers: int, hidden: int, cell: str, block: str = "plain", ffn: int = 0, conv: int = 1) -> str:
    """How reports name a model: "2x256 lstm", "4x192 minlstm residual ffn 2", "4x192 mingru conv 2 residual"."""
    suffix = (f" residual ffn {ffn}" if ffn else " residual") if block == "residual" else ""
    return f"{layers}x{hidden} {cell}{f' conv {conv}' if conv > 1 else ''}{suffix}"


def make_norm(kind: str, size: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(size)
    if kind == "rms":
        return nn.RMSNorm(size, eps=1e-5)
    return nn.Identity()


class FeedForward(nn.Sequential):
    """The position-wise part of a residual block: widen, GELU (tanh form: every exporter has tanh), narrow."""

    def __init__(self, size: int, multiplier: int):
        super().__init__(nn.Linear(size, multiplier * size), nn.GELU(approximate="tanh"),
                         nn.Linear(multiplier * size, size))


class Block(nn.Module):
    """One residual layer: ``x + cell(norm(x))``, then ``x + ffn(norm(x))`` (when ``ffn`` > 0)."""

    def __init__(self, cell: nn.Module, size: int, ffn: int, norm: str):
        super().__init__()
        self.norm_cell, self.cell = make_norm(norm, size), cell
        self.norm_ffn = make_norm(norm, size) if ffn else None
        self.ffn = FeedForward(size, ffn) if ffn else None


class ResidualStack(nn.Module):
    """``num_layers`` blocks and a final norm, with the interface of the single-layer cells inside them
    (``x, state -> output, state``; an LSTM's state the pair (h, c), a convolving min cell's a tuple too)."""

    def __init__(self, cells: list[nn.Module], size: int, ffn: int, norm: str, dropout: float, locked: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(Block(cell, size, ffn, norm) for cell in cells)
        self.norm = make_norm(norm, size)
        self.dropout = SequenceDropout(dropout, locked)

    def forward(self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, object]:
        def block_step(layer: int, x: torch.Tensor, own: object) -> tuple[torch.Tensor, object]:
            block = self.layers[layer]
            output, new = block.cell(block.norm_cell(x), own)
            x = x + self.dropout(output)
            if block.ffn is not None:
                x = x + self.dropout(block.ffn(block.norm_ffn(x)))
            return x, new

        x, stacked = over_layers(x, state, len(self.layers), block_step)
        return self.norm(x), stacked


def over_layers(x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, ...], count: int,
                layer_step: Callable[[int, torch.Tensor, object], tuple[torch.Tensor, object]]) -> tuple[torch.Tensor, object]:
    """``count`` layers one after another, each given its own slice of a stacked state (a tensor, or a
    tuple of them such as an LSTM's (h, c), each (layers, batch, hidden)): ``layer_step(layer, x, own)
    -> (x, new own)``. The last layer's output, and the new states stacked again as they came."""
    tupled = isinstance(state, tuple)
    parts = state if tupled else (state,)
    finals = []
    for layer in range(count):
        own = tuple(t[layer : layer + 1] for t in parts)
        x, new = layer_step(layer, x, own if tupled else own[0])
        finals.append(new if tupled else (new,))
    stacked = tuple(torch.cat([f[i] for f in finals]) for i in range(len(parts)))
    return x, stacked if tupled else stacked[0]
