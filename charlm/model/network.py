"""The model: embedding -> stacked recurrent cells -> linear head.

Where the LSTM runs: ``CharRNN.forward`` calls ``self.rnn``, an ``nn.LSTM``/``nn.GRU``/``nn.RNN``
(cuDNN on a GPU, oneDNN or ATen on a CPU); a min cell's stack is ``charlm.model.cells.MinStack``. With
``block="residual"`` each layer is its own one-layer cell inside ``charlm.model.cells.ResidualStack``.

The recurrent state is a tuple of tensors, each (num_layers, batch, hidden_size): ``(h, c)`` for
an LSTM, ``(h, x_{t-1}, …)`` for a min cell with ``input_conv`` > 1 (the inputs its gates read
next), ``(h,)`` for the others. Callers treat it as opaque: they get it from ``initial_state``,
pass it to ``forward`` and receive the next one back.

A bidirectional model is two language models sharing one embedding (and the head, when tied): a
forward stack that reads left to right and predicts the next character, and a backward stack
that reads right to left and predicts the previous one. The two never mix, so neither can see the
character it predicts. ``forward(tokens, state, direction="backward")`` runs the backward stack on
tokens given in *its* reading order (the text reversed); each direction has its own state.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

import torch
from torch import nn

from charlm.config import FORGET_BIAS, ModelConfig
from charlm.model.cells import MIN_CELLS, MinStack, ResidualStack, over_layers
from charlm.model.dropout import SequenceDropout, sequence_dropout

State = tuple[torch.Tensor, ...]
WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # torch's, per layer: weight_ih_l0, ...


class Reading(NamedTuple):
    """What a forward pass gives: the logits, the new state, and the top layer's output before and
    after dropout (what the head read), for activation regularisation."""

    logits: torch.Tensor
    state: State
    output: torch.Tensor
    dropped: torch.Tensor


def directions_of(bidirectional: bool) -> tuple[str, ...]:
    """The directions a model reads its text in."""
    return ("forward", "backward") if bidirectional else ("forward",)


class CharRNN(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 256,
        embedding_size: int | None = None,
        num_layers: int = 2,
        dropout: float = 0.0,
        embedding_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        tie_weights: bool = False,
        forget_bias: float = FORGET_BIAS,
        bidirectional: bool = False,
        block: str = "plain",
        ffn: int = 0,
        norm: str = "layer",
        input_conv: int = 1,
        dropout_mask: str = "element",
    ):
        super().__init__()
        embedding_size = embedding_size or hidden_size
        if block == "residual" and embedding_size != hidden_size:
            raise ValueError("a residual block needs embedding_size == hidden_size")
        if weight_dropout and cell in MIN_CELLS:
            raise ValueError(f"weight_dropout drops hidden-to-hidden weights, and a {cell} has none")
        if input_conv > 1 and cell not in MIN_CELLS:
            raise ValueError(f"input_conv is for the min cells ({', '.join(MIN_CELLS)}), not {cell}")
        self.vocab_size = vocab_size
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.block, self.ffn, self.norm, self.input_conv = block, ffn, norm, input_conv
        self.locked = dropout_mask == "locked"  # one dropout mask per sequence (charlm/model/dropout.py)
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        rnn_args = dict(
            input_size=embedding_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            # torch applies it between layers only, a new mask per element; locked masks are applied here
            dropout=dropout if num_layers > 1 and not self.locked else 0.0,
            batch_first=True,
        )
        stack_args = dict(block=block, ffn=ffn, norm=norm, dropout=dropout, input_conv=input_conv, locked=self.locked)
        self.rnn = self.make_stack(cell, rnn_args, **stack_args)
        self.dropout = SequenceDropout(dropout, self.locked)
        self.embedding_dropout = SequenceDropout(embedding_dropout, self.locked)
        self.weight_dropout = weight_dropout
        self.head = nn.Linear(hidden_size, vocab_size)
        if bidirectional:
            self.rnn_backward = self.make_stack(cell, rnn_args, **stack_args)
            self.head_backward = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if embedding_size != hidden_size:
                raise ValueError("tie_weights needs embedding_size == hidden_size")
            self.head.weight = self.embedding.weight
            if bidirectional:
                self.head_backward.weight = self.embedding.weight
        if cell in ("lstm", "minlstm"):
            self._set_forget_bias(forget_bias)

    @staticmethod
    def make_stack(cell: str, rnn_args: dict, block: str = "plain", ffn: int = 0, norm: str = "layer",
                   dropout: float = 0.0, input_conv: int = 1, locked: bool = False) -> nn.Module:
        if block == "residual":
            size = rnn_args["hidden_size"]
            one = dict(rnn_args, input_size=size, num_layers=1, dropout=0.0)
            cells = [CharRNN.make_stack(cell, one, input_conv=input_conv) for _ in range(rnn_args["num_layers"])]
            return ResidualStack(cells, size, ffn, norm, dropout, locked=locked)
        if cell in MIN_CELLS:  # its own loop drops between layers (torch's fused modules are told 0 when locked)
            return MinStack(cell, **dict(rnn_args, dropout=dropout), input_conv=input_conv, locked=locked)
        if cell == "lstm":
            return nn.LSTM(**rnn_args)
        if cell == "gru":
            return nn.GRU(**rnn_args)
        if cell in ("rnn_tanh", "rnn_relu"):
            return nn.RNN(nonlinearity=cell.removeprefix("rnn_"), **rnn_args)
        raise ValueError(f"unknown cell {cell!r}")

    @classmethod
    def from_config(cls, config: ModelConfig, vocab_size: int) -> "CharRNN":
        return cls(
            vocab_size=vocab_size,
            cell=config.cell,
            hidden_size=config.hidden_size,
            embedding_size=config.embedding_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            embedding_dropout=config.embedding_dropout,
            weight_dropout=config.weight_dropout,
            tie_weights=config.tie_weights,
            forget_bias=config.forget_bias,
            bidirectional=config.bidirectional,
            block=config.block,
            ffn=config.ffn,
            norm=config.norm,
            input_conv=config.input_conv,
            dropout_mask=config.dropout_mask,
        )

    def _set_forget_bias(self, value: float) -> None:
        # torch's LSTM adds two bias vectors (b_ih + b_hh), gates ordered input, forget, cell, output.
        # Put the whole value in b_ih and zero b_hh's forget slice so the sum is exactly `value`.
        # A minLSTM's gates are (forget, input, candidate), one bias vector.
        hidden = self.hidden_size
        forget = slice(0, hidden) if self.cell == "minlstm" else slice(hidden, 2 * hidden)
        with torch.no_grad():
            for stack in self._stacks():
                for layer in range(self.num_layers):
                    weights = recurrent_weights(stack, layer)
                    weights["bias_ih"][forget].fill_(value)
                    if weights["bias_hh"] is not None:
                        weights["bias_hh"][forget].zero_()

    def _stacks(self) -> list[nn.RNNBase]:
        return [self.rnn, self.rnn_backward] if self.bidirectional else [self.rnn]

    @property
    def directions(self) -> tuple[str, ...]:
        return directions_of(self.bidirectional)

    @property
    def state_size(self) -> int:
        """Number of tensors in a state: 2 for an LSTM (h, c), K for a min cell with input_conv K, else 1."""
        return state_parts(self.cell, self.input_conv)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """All-zero state for ``batch_size`` independent streams."""
        weight = self.head.weight
        device = device if device is not None else weight.device
        shape = (self.num_layers, batch_size, self.hidden_size)
        return tuple(torch.zeros(shape, device=device, dtype=weight.dtype) for _ in range(self.state_size))

    def stack_and_head(self, direction: str) -> tuple[nn.RNNBase, nn.Linear]:
        """The recurrent stack and output head of ``direction`` ("forward" or "backward")."""
        if direction == "forward":
            return self.rnn, self.head
        if direction == "backward" and self.bidirectional:
            return self.rnn_backward, self.head_backward
        raise ValueError(f"this model has no {direction!r} direction")

    def forward(
        self, tokens: torch.Tensor, state: State | None = None, direction: str = "forward"
    ) -> tuple[torch.Tensor, State]:
        """Logits (batch, time, vocab) for the next character in ``direction``'s reading order at
        every position, and that direction's new state."""
        reading = self.read(tokens, state, direction)
        return reading.logits, reading.state

    def read(self, tokens: torch.Tensor, state: State | None = None, direction: str = "forward") -> Reading:
        """``forward``, with the top layer's output before and after dropout besides."""
        stack, head = self.stack_and_head(direction)
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        embedded = self.embedding_dropout(self.embedding(tokens))
        rnn_state = state if self.state_size > 1 else state[0]
        output, new_state = self.run_stack(stack, embedded, rnn_state)
        dropped = self.dropout(output)
        return Reading(head(dropped), tuple(new_state) if self.state_size > 1 else (new_state,), output, dropped)

    def run_stack(self, stack: nn.Module, x: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        """The recurrent stack over ``x``. In training, DropConnect on the hidden-to-hidden weights
        (AWD-LSTM's WeightDrop): one mask per forward pass, the same at every time step, so the
        recurrence itself is regularised while the fused kernel still runs; and a fused stack of
        several layers with locked dropout runs layer by layer, its masks applied in between."""
        weights = {}
        if self.training and self.weight_dropout > 0:
            weights = {name: nn.functional.dropout(weight, self.weight_dropout)
                       for name, weight in stack.named_parameters() if "weight_hh" in name}
        if self.training and self.locked and self.dropout.p > 0 and isinstance(stack, nn.RNNBase) \
                and stack.num_layers > 1:
            return self.layer_by_layer(stack, weights, x, state)
        if weights:
            return torch.func.functional_call(stack, weights, (x, state))
        return stack(x, state)

    def layer_by_layer(self, stack: nn.RNNBase, weights: dict[str, torch.Tensor], x: torch.Tensor,
                       state: object) -> tuple[torch.Tensor, object]:
        """A fused stack one layer at a time, on its own parameters (``weights`` in place of some),
        with a locked dropout mask on each layer's input after the first."""
        def layer_step(layer: int, x: torch.Tensor, own: object) -> tuple[torch.Tensor, object]:
            if layer:
                x = sequence_dropout(x, self.dropout.p, locked=True, training=True)
            params = {f"{name}_l0": weights.get(f"{name}_l{layer}", weight)
                      for name, weight in recurrent_weights(stack, layer).items()}
            template = one_layer(type(stack), x.shape[-1], stack.hidden_size, getattr(stack, "nonlinearity", None))
            return torch.func.functional_call(template, params, (x, own))

        return over_layers(x, state, stack.num_layers, layer_step)

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by layer: ``embedding``, ``layer0``…, ``head`` (and ``backward_layer0``…,
        ``backward_head``), for per-layer gradient norms; a residual stack's final norm counts as the head."""
        groups: dict[str, list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():  # a tied head's weight is listed once, as the embedding
            module, _, leaf = name.partition(".")
            prefix = "backward_" if module.endswith("_backward") else ""
            if module.startswith("rnn"):
                index = re.match(r"layers\.(\d+)\.", leaf) or re.search(r"_l(\d+)$", leaf)
                group = f"{prefix}layer{index[1]}" if index else f"{prefix}head"
            else:
                group = prefix + module.removesuffix("_backward")
            groups.setdefault(group, []).append(parameter)
        return groups

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    @torch.no_grad()
    def extend_vocab(self, new_size: int) -> None:
        """Grow the embedding and head to ``new_size`` tokens; old rows keep their weights."""
        old = self.vocab_size
        if new_size <= old:
            return
        tied = self.head.weight is self.embedding.weight
        embedding = nn.Embedding(new_size, self.embedding.embedding_dim).to(self.embedding.weight)
        embedding.weight[:old] = self.embedding.weight
        self.embedding, self.vocab_size = embedding, new_size
        for name in ("head", "head_backward") if self.bidirectional else ("head",):
            old_head = getattr(self, name)
            head = nn.Linear(self.hidden_size, new_size).to(old_head.weight)
            head.weight[:old] = old_head.weight
            head.bias[:old] = old_head.bias
            if tied:
                head.weight = self.embedding.weight
            setattr(self, name, head)


def state_parts(cell: str, input_conv: int = 1) -> int:
    """Tensors in a state: an LSTM's (h, c); a min cell's h and the last ``input_conv`` - 1 inputs of each layer."""
    return 2 if cell == "lstm" else input_conv if cell in MIN_CELLS else 1


def recurrent_weights(stack: nn.Module, layer: int) -> dict[str, torch.Tensor | None]:
    """Layer ``layer``'s ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (torch's names and gate
    orders) in a plain or a residual stack; None where the cell has none (a min cell's hidden-to-hidden)."""
    cell, index = (stack.layers[layer].cell, 0) if isinstance(stack, ResidualStack) else (stack, layer)
    return {name: getattr(cell, f"{name}_l{index}", None) for name in WEIGHT_NAMES}


@functools.cache
def one_layer(kind: type[nn.RNNBase], width: int, hidden: int, nonlinearity: str | None) -> nn.RNNBase:
    """A one-layer ``kind`` for inputs ``width`` wide with no weights of its own (on the meta device):
    ``CharRNN.layer_by_layer`` runs it on a layer's parameters, swapped in for the call (so one
    training forward pass at a time per process, as charlm trains)."""
    extra = {"nonlinearity": nonlinearity} if nonlinearity else {}
    return kind(width, hidden, num_layers=1, batch_first=True, device="meta", **extra)
