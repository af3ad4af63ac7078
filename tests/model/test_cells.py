"""charlm/model/cells.py against naive per-step references in float64: outputs, carried state and gradients."""

from __future__ import annotations

import pytest
import torch

from charlm.model.cells import MIN_CELLS, MinStack, ResidualStack, linear_scan, make_norm
from charlm.model.network import CharRNN

TOLERANCE = dict(rtol=1e-6, atol=1e-6)


def naive_min_layer(cell: str, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor,
                    h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's equations one time step at a time, with autograd through every step."""
    hidden = h.shape[-1]
    outputs = []
    for t in range(x.shape[1]):
        gates = x[:, t] @ weight.t() + bias
        if cell == "mingru":
            z, candidate = torch.sigmoid(gates[:, :hidden]), gates[:, hidden:]
            h = (1 - z) * h + z * candidate
        else:
            f, i = torch.sigmoid(gates[:, :hidden]), torch.sigmoid(gates[:, hidden : 2 * hidden])
            candidate = gates[:, 2 * hidden :]
            h = (f * h + i * candidate) / (f + i)
        outputs.append(h)
    return torch.stack(outputs, 1), h


def naive_stack(stack: MinStack, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    finals = []
    for layer in range(stack.num_layers):
        x, h = naive_min_layer(stack.cell, getattr(stack, f"weight_ih_l{layer}"), getattr(stack, f"bias_ih_l{layer}"),
                               x, h0[layer])
        finals.append(h)
    return x, torch.stack(finals)


def gradients(outputs: tuple[torch.Tensor, torch.Tensor], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    output, final = outputs
    weights = torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output)  # not a symmetric loss
    loss = (output * weights).sum() + (final ** 2).sum()
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("carried", [False, True])
def test_min_stack_matches_the_per_step_reference(cell: str, layers: int, carried: bool) -> None:
    torch.manual_seed(0)
    stack = MinStack(cell, 5, 7, layers).double()
    x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    h0 = (torch.randn if carried else torch.zeros)(layers, 3, 7, dtype=torch.float64).requires_grad_()
    inputs = [x, h0, *stack.parameters()]
    ours, reference = stack(x, h0), naive_stack(stack, x, h0)
    torch.testing.assert_close(ours[0], reference[0], **TOLERANCE)
    torch.testing.assert_close(ours[1], reference[1], **TOLERANCE)
    for mine, theirs in zip(gradients(ours, inputs), gradients(reference, inputs)):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


def test_linear_scan_passes_gradcheck_for_gates_of_any_sign() -> None:
    torch.manual_seed(1)
    a = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)  # negative a and b too
    b = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_scan, (a, b, h0))


def test_a_window_cut_in_two_carries_its_state_exactly() -> None:
    torch.manual_seed(2)
    stack = MinStack("minlstm", 4, 6, 2).double()
    x = torch.randn(2, 10, 4, dtype=torch.float64)
    whole, final = stack(x, torch.zeros(2, 2, 6, dtype=torch.float64))
    first, carried = stack(x[:, :4], torch.zeros(2, 2, 6, dtype=torch.float64))
    second, final_two = stack(x[:, 4:], carried)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, **TOLERANCE)
    torch.testing.assert_close(final_two, final, **TOLERANCE)


def naive_residual(stack: ResidualStack, x: torch.Tensor, state: tuple[torch.Tensor, ...],
                   cell: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer x + cell(norm(x)) and x + ffn(norm(x)), each cell run one time step at a time."""
    finals = []
    for layer, block in enumerate(stack.layers):
        if cell in MIN_CELLS:
            output, h = naive_min_layer(cell, block.cell.weight_ih_l0, block.cell.bias_ih_l0, block.norm_cell(x),
                                        state[0][layer])
        else:  # a GRU, stepped by torch's own cell on the same weights
            step = torch.nn.GRUCell(x.shape[-1], x.shape[-1]).double()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                setattr(step, name, getattr(block.cell, f"{name}_l0"))
            h, outputs = state[0][layer], []
            for t in range(x.shape[1]):
                h = step(block.norm_cell(x)[:, t], h)
                outputs.append(h)
            output = torch.stack(outputs, 1)
        finals.append(h)
        x = x + output
        if block.ffn is not None:
            hidden = block.ffn[0](block.norm_ffn(x))
            x = x + block.ffn[2](0.5 * hidden * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (hidden + 0.044715 * hidden ** 3))))
    return stack.norm(x), torch.stack(finals)


@pytest.mark.parametrize("cell", ["mingru", "minlstm", "gru"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("carried", [False, True])
def test_residual_stack_matches_the_per_step_reference(cell: str, layers: int, carried: bool) -> None:
    torch.manual_seed(3)
    model = CharRNN(9, cell, 8, num_layers=layers, block="residual", ffn=2).double()
    stack = model.rnn
    x = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    h0 = (torch.randn if carried else torch.zeros)(layers, 2, 8, dtype=torch.float64).requires_grad_()
    inputs = [x, h0, *stack.parameters()]
    ours, reference = stack(x, h0), naive_residual(stack, x, (h0,), cell)
    torch.testing.assert_close(ours[0], reference[0], **TOLERANCE)
    torch.testing.assert_close(ours[1], reference[1], **TOLERANCE)
    for mine, theirs in zip(gradients(ours, inputs), gradients(reference, inputs)):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


def test_an_lstm_in_a_residual_stack_carries_h_and_c() -> None:
    model = CharRNN(9, "lstm", 8, num_layers=2, block="residual", ffn=1)
    logits, (h, c) = model(torch.randint(0, 9, (3, 5)))
    assert logits.shape == (3, 5, 9) and h.shape == c.shape == (2, 3, 8)
    again, _ = model(torch.randint(0, 9, (3, 5)), (h, c))
    assert torch.isfinite(again).all()


def test_minlstm_forget_bias_lands_on_its_forget_gate() -> None:
    model = CharRNN(9, "minlstm", 8, num_layers=2, forget_bias=1.5)
    assert torch.all(model.rnn.bias_ih_l1[:8] == 1.5) and not torch.all(model.rnn.bias_ih_l1[8:16] == 1.5)


@pytest.mark.parametrize("kind, type_name", [("layer", "LayerNorm"), ("rms", "RMSNorm"), ("none", "Identity")])
def test_norms(kind: str, type_name: str) -> None:
    assert type(make_norm(kind, 4)).__name__ == type_name


def test_min_stack_under_bf16_autocast_keeps_its_recurrence_in_fp32() -> None:
    stack = MinStack("mingru", 4, 6, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, final = stack(torch.randn(2, 5, 4), torch.zeros(2, 2, 6))
    assert output.dtype == torch.float32 and final.dtype == torch.float32


def naive_conv_stack(stack: MinStack, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """QRNN's convolution written out: at each step a layer's gates read [x_t; x_{t-1}; …], the window's
    first steps reading the carried inputs; then the per-step reference cell."""
    h0, past = state[0], state[1:]
    finals, carried = [], []
    for layer in range(stack.num_layers):
        history = [p[layer] for p in past]  # x_{-1}, x_{-2}, …
        reads = []
        for t in range(x.shape[1]):
            reads.append(torch.cat([x[:, t - k] if t - k >= 0 else history[k - t - 1] for k in range(len(past) + 1)], -1))
        carried.append([x[:, x.shape[1] - 1 - k] for k in range(len(past))])
        x, h = naive_min_layer(stack.cell, getattr(stack, f"weight_ih_l{layer}"), getattr(stack, f"bias_ih_l{layer}"),
                               torch.stack(reads, 1), h0[layer])
        finals.append(h)
    return x, torch.stack(finals), *(torch.stack([c[k] for c in carried]) for k in range(len(past)))


def conv_gradients(outputs: tuple[torch.Tensor, ...], inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    output, *state = outputs
    weights = torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output)
    loss = (output * weights).sum() + sum((part ** 2).sum() * (k + 1) for k, part in enumerate(state))
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("carried", [False, True])
@pytest.mark.parametrize("conv", [2, 3])
def test_a_convolving_min_stack_matches_the_per_step_reference(cell: str, layers: int, carried: bool, conv: int) -> None:
    torch.manual_seed(4)
    stack = MinStack(cell, 6, 6, layers, input_conv=conv).double()
    x = torch.randn(3, 9, 6, dtype=torch.float64, requires_grad=True)
    make = torch.randn if carried else torch.zeros
    state = tuple(make(layers, 3, 6, dtype=torch.float64).requires_grad_() for _ in range(conv))
    inputs = [x, *state, *stack.parameters()]
    output, carried_out = stack(x, state)
    ours, reference = (output, *carried_out), naive_conv_stack(stack, x, state)
    assert len(ours) == len(reference) == conv + 1
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)
    for mine, theirs in zip(conv_gradients(ours, inputs), conv_gradients(reference, inputs)):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


@pytest.mark.parametrize("block", ["plain", "residual"])
def test_a_convolving_model_cut_anywhere_carries_its_inputs_exactly(block: str) -> None:
    torch.manual_seed(5)
    model = CharRNN(11, "mingru", 8, num_layers=2, block=block, input_conv=3).double()
    tokens = torch.randint(0, 11, (2, 12))
    whole, final = model(tokens)
    assert len(final) == model.state_size == 3 and all(part.shape == (2, 2, 8) for part in final)
    pieces, state = [], None
    for start, stop in ((0, 1), (1, 5), (5, 12)):  # a window shorter than the convolution too
        logits, state = model(tokens[:, start:stop], state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, **TOLERANCE)
    for mine, theirs in zip(state, final):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


def test_input_conv_is_refused_where_it_cannot_carry_its_inputs() -> None:
    with pytest.raises(ValueError, match="min cells"):
        CharRNN(9, "lstm", 8, input_conv=2)
    with pytest.raises(ValueError, match="input_size must equal hidden_size"):
        CharRNN(9, "mingru", 8, embedding_size=4, input_conv=2)
