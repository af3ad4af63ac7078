"""Generation's fast path: one character step of a trained CharRNN, written out by hand.

Calling ``nn.LSTM`` once per character spends most of its time in per-call set-up (weight
checks, workspace, the layer loop in C++ wrappers) rather than arithmetic. ``FastStep`` takes the
model's weights once, rearranges them into what a single step needs, and then does each layer
in a few tensor operations:

- layer 0's input projection ``W_ih · embedding[token] + b`` is the same for every occurrence of a
  token, so it is precomputed as one table row per token: the step's first matmul becomes a lookup;
- the LSTM's gates are reordered from torch's (input, forget, cell, output) to (input, forget,
  output, cell) so one ``sigmoid`` covers three gates and one ``tanh`` the fourth;
- the state is updated in place: the step allocates only the gate buffers (a residual block's norms
  and feed-forward part allocate their own);
- a min cell (charlm/model/cells.py) has no hidden-to-hidden product at all: its step is the table
  lookup (or input product) and two or three elementwise operations (with ``input_conv`` > 1, one
  product more per carried input);
- the matrices are stored in whichever layout, (input, output) row-major or transposed views of
  (output, input), runs faster on this machine: ``choose_layout`` times both when a model is loaded.

It computes the same function as ``CharRNN.forward`` in eval mode (dropout is off there anyway);
``tests/model/test_fast_step.py`` checks the logits agree over a thousand steps.
"""

from __future__ import annotations

import copy
import time
from typing import NamedTuple

import torch

from charlm.model.cells import ResidualStack
from charlm.model.network import CharRNN, State, recurrent_weights

LAYOUTS = ("in_out", "out_in")  # (input, output) row-major; or transposed views of (output, input)


def _laid_out(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """``weight`` (output, input) as the (input, output) operand of ``x @ w``, in ``layout``."""
    return weight.t().contiguous() if layout == "in_out" else weight.contiguous().t()


class FastStep:
    """Advance ``batch`` streams of one direction of ``model`` by one token at a time."""

    def __init__(self, model: CharRNN, direction: str = "forward", layout: str = "in_out"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        stack, head = model.stack_and_head(direction)
        self.cell = model.cell
        self.hidden_size = hidden = model.hidden_size
        self.num_layers = model.num_layers
        self.state_size, self.conv = model.state_size, model.input_conv
        with torch.no_grad():
            weights = [[None if w is None else w.detach().float() for w in recurrent_weights(stack, layer).values()]
                       for layer in range(self.num_layers)]
            if self.cell == "lstm":  # (i, f, g, o) -> (i, f, o, g)
                order = torch.cat([torch.arange(0, 2 * hidden), torch.arange(3 * hidden, 4 * hidden),
                                   torch.arange(2 * hidden, 3 * hidden)]).to(weights[0][0].device)
                weights = [[w.index_select(0, order) for w in layer] for layer in weights]
            self.blocks = _residual_parts(stack)
            embedding = model.embedding.weight.detach().float()
            self.embedding = embedding if self.blocks else None  # a residual stack adds it to layer 0's output
            # GRU keeps b_hh apart: its candidate gate multiplies (W_hn h + b_hn) by the reset gate.
            fold_hh_bias = self.cell != "gru"
            self.input_weights: list[torch.Tensor | None] = []
            self.input_biases: list[torch.Tensor] = []
            self.hidden_weights: list[torch.Tensor | None] = []
            self.hidden_biases: list[torch.Tensor | None] = []
            self.past_weights: list[list[torch.Tensor]] = []  # input_conv > 1: the weights of x_{t-1}, x_{t-2}, …
            for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
                bias = b_ih + b_hh if fold_hh_bias and b_hh is not None else b_ih
                w_ih, *past = w_ih.chunk(self.conv, dim=1)
                self.past_weights.append([_laid_out(w, layout) for w in past])
                if layer == 0:  # what layer 0 reads is a function of the token alone
                    read = self.blocks[0].norm_cell(embedding) if self.blocks else embedding
                    self.token_read = read  # (vocab, input): what a convolving layer 0 carries
                    self.token_table = torch.addmm(bias, read, w_ih.t())  # (vocab, gates)
                    self.input_weights.append(None)
                else:
                    self.input_weights.append(_laid_out(w_ih, layout))
                self.input_biases.append(bias)
                self.hidden_weights.append(None if w_hh is None else _laid_out(w_hh, layout))
                self.hidden_biases.append(None if fold_hh_bias else b_hh)
            self.final_norm = _eval_copy(stack.norm) if self.blocks else None
            self.head_weight = _laid_out(head.weight.detach().float(), layout)
            self.head_bias = head.bias.detach().float()

    def import_state(self, state: State) -> "StepState":
        """The model's state ((layers, batch, hidden) tensors) as this step's own working copy."""
        return StepState(self, [[t[layer].float().clone() for t in state] for layer in range(self.num_layers)])

    def zero_state(self, batch: int) -> "StepState":
        device = self.token_table.device
        return StepState(self, [[torch.zeros(batch, self.hidden_size, device=device) for _ in range(self.state_size)]
                                for _ in range(self.num_layers)])

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, state: "StepState") -> torch.Tensor:
        """Logits (batch, vocab) after reading ``tokens`` (batch,); ``state`` is updated in place.

        Every operation writes into buffers made once per state, through views made once too:
        at one stream, Python's cost per tensor call, not arithmetic, is what a step is made of.
        """
        x = tokens
        for layer in range(self.num_layers):
            h = state.layers[layer][0]
            gates = state.gates[layer]
            w_in = self.input_weights[layer]
            if w_in is None:
                torch.index_select(self.token_table, 0, tokens, out=gates)
                read = self.token_read[tokens] if self.conv > 1 else None
            else:
                read = self.blocks[layer].norm_cell(x) if self.blocks else x
                torch.addmm(self.input_biases[layer], read, w_in, out=gates)
            if self.conv > 1:
                self._convolve(layer, gates, read, state)
            self._update(layer, gates, state)
            x = self._add_block(layer, tokens, x, h) if self.blocks else h
        if self.final_norm is not None:
            x = self.final_norm(x)
        return torch.addmm(self.head_bias, x, self.head_weight)

    def _convolve(self, layer: int, gates: torch.Tensor, read: torch.Tensor, state: "StepState") -> None:
        """Add what the gates read of the layer's last inputs, then carry this one: x_{t-2} <- x_{t-1} <- read."""
        past = state.layers[layer][1:]
        for weight, previous in zip(self.past_weights[layer], past):
            gates.addmm_(previous, weight)
        for older, newer in zip(past[::-1], past[-2::-1]):
            older.copy_(newer)
        past[0].copy_(read)

    def _update(self, layer: int, gates: torch.Tensor, state: "StepState") -> None:
        """The cell's own step: ``state`` of ``layer`` from its input gates (written in place)."""
        h, views = state.layers[layer][0], state.views[layer]
        if self.cell == "lstm":
            c = state.layers[layer][1]
            input_gate, forget_gate, output_gate, sigmoid_part, candidate = views
            gates.addmm_(h, self.hidden_weights[layer])
            sigmoid_part.sigmoid_()
            candidate.tanh_()
            c.mul_(forget_gate).addcmul_(input_gate, candidate)
            torch.tanh(c, out=state.scratch[layer])
            torch.mul(output_gate, state.scratch[layer], out=h)
        elif self.cell == "gru":
            gates_h = state.scratch[layer]
            reset_update, reset, update, candidate, reset_update_h, candidate_h = views
            torch.addmm(self.hidden_biases[layer], h, self.hidden_weights[layer], out=gates_h)
            reset_update.add_(reset_update_h).sigmoid_()
            candidate.addcmul_(reset, candidate_h).tanh_()
            torch.lerp(candidate, h, update, out=h)  # h' = (1 - z) * n + z * h
        elif self.cell == "mingru":
            update, candidate = views
            h.lerp_(candidate, update.sigmoid_())  # h' = (1 - z) * h + z * h~
        elif self.cell == "minlstm":
            forget_gate, input_gate, candidate, sigmoid_part = views
            sigmoid_part.sigmoid_()
            torch.add(forget_gate, input_gate, out=state.scratch[layer])
            h.mul_(forget_gate).addcmul_(input_gate, candidate).div_(state.scratch[layer])
        else:
            gates.addmm_(h, self.hidden_weights[layer])
            h.copy_(gates.tanh_() if self.cell == "rnn_tanh" else gates.relu_())

    def _add_block(self, layer: int, tokens: torch.Tensor, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """A residual block's output: its input plus the cell's, then plus the feed-forward part's."""
        block = self.blocks[layer]
        x = (self.embedding[tokens] if layer == 0 else x) + h
        return x + block.ffn(block.norm_ffn(x)) if block.ffn is not None else x


class BlockParts(NamedTuple):
    """What a residual block adds around its cell, in fp32 and eval mode."""

    norm_cell: torch.nn.Module
    norm_ffn: torch.nn.Module | None
    ffn: torch.nn.Module | None


def _eval_copy(module: torch.nn.Module | None) -> torch.nn.Module | None:
    return None if module is None else copy.deepcopy(module).float().eval().requires_grad_(False)


def _residual_parts(stack: torch.nn.Module) -> list[BlockParts]:
    """A residual stack's norms and feed-forward parts (the cells' weights are laid out apart); none for a plain one."""
    if not isinstance(stack, ResidualStack):
        return []
    return [BlockParts(_eval_copy(b.norm_cell), _eval_copy(b.norm_ffn), _eval_copy(b.ffn)) for b in stack.layers]


class StepState:
    """One direction's recurrent state for ``FastStep``, with the step's buffers and their views."""

    def __init__(self, step: FastStep, layers: list[list[torch.Tensor]]):
        self.step = step
        self.layers = layers
        self._views: dict[tuple[int, int], StepState] = {}
        hidden = step.hidden_size
        batch, device = layers[0][0].shape[0], layers[0][0].device
        self.device = device
        gate_width = step.token_table.shape[1]
        self.gates = [torch.empty(batch, gate_width, device=device) for _ in layers]
        self.scratch: list[torch.Tensor] = []
        self.views: list[tuple[torch.Tensor, ...]] = []
        for gates in self.gates:
            if step.cell == "mingru":  # (z | h~)
                self.views.append((gates[:, :hidden], gates[:, hidden:]))
            elif step.cell == "minlstm":  # (f, i | h~), f + i in scratch
                self.scratch.append(torch.empty(batch, hidden, device=device))
                self.views.append((gates[:, :hidden], gates[:, hidden : 2 * hidden], gates[:, 2 * hidden :],
                                   gates[:, : 2 * hidden]))
            elif step.cell == "lstm":  # (i, f, o | g)
                self.scratch.append(torch.empty(batch, hidden, device=device))
                self.views.append((gates[:, :hidden], gates[:, hidden : 2 * hidden], gates[:, 2 * hidden : 3 * hidden],
                                   gates[:, : 3 * hidden], gates[:, 3 * hidden :]))
            elif step.cell == "gru":  # (r, z | n), input part in gates, hidden part in scratch
                gates_h = torch.empty(batch, gate_width, device=device)
                self.scratch.append(gates_h)
                self.views.append((gates[:, : 2 * hidden], gates[:, :hidden], gates[:, hidden : 2 * hidden],
                                   gates[:, 2 * hidden :], gates_h[:, : 2 * hidden], gates_h[:, 2 * hidden :]))
            else:
                self.views.append(())

    @property
    def batch(self) -> int:
        return self.layers[0][0].shape[0]

    def rows(self, start: int, stop: int) -> "StepState":
        """Rows ``start`` to ``stop`` as a state of their own, sharing this one's memory (made once each)."""
        if (start, stop) == (0, self.batch):
            return self
        if (start, stop) not in self._views:
            self._views[start, stop] = StepState(self.step, [[t[start:stop] for t in layer] for layer in self.layers])
        return self._views[start, stop]

    def copy_row(self, source: int, target: int) -> None:
        for layer in self.layers:
            for t in layer:
                t[target].copy_(t[source])

    def set_row(self, row: int, state: State) -> None:
        """Row ``row`` from a model state ((layers, 1, hidden) tensors)."""
        for layer, parts in enumerate(self.layers):
            for t, source in zip(parts, state):
                t[row].copy_(source[layer, 0])


_chosen: dict[tuple, str] = {}


def choose_layout(model: CharRNN, rows: int, direction: str = "forward", seconds: float = 0.01) -> str:
    """The faster layout for steps of ``rows`` rows on the device ``model`` is on, timed on its own
    weights (a few ms each). Both layouts give the same numbers at that size, or it keeps ``in_out``:
    a timing must never change a text. Measured once per process for each shape."""
    shape = (model.head.weight.device, model.cell, model.block, model.input_conv, model.hidden_size, model.num_layers,
             model.vocab_size, rows)
    if shape not in _chosen:
        _chosen[shape] = _faster_layout(model, rows, direction, seconds)
    return _chosen[shape]


def _faster_layout(model: CharRNN, rows: int, direction: str, seconds: float) -> str:
    steps = {layout: FastStep(model, direction, layout) for layout in LAYOUTS}
    device = model.head.weight.device
    tokens = torch.arange(rows, device=device) % model.vocab_size
    states = {layout: step.zero_state(rows) for layout, step in steps.items()}
    for _ in range(3):  # away from the zero state, where many products are trivially equal
        outputs = {layout: steps[layout](tokens, states[layout]) for layout in LAYOUTS}
    if not torch.equal(outputs["in_out"], outputs["out_in"]):
        return "in_out"
    timings: dict[str, float] = {}
    for layout in LAYOUTS * 2:  # interleaved, best of two: a burst of noise hits both
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            steps[layout](tokens, states[layout])
            count += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[layout] = max(timings.get(layout, 0.0), count / (time.perf_counter() - started))
    return max(timings, key=timings.__getitem__)
