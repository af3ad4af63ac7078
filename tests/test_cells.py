"""charlm/cells.py against naive per-step references in float64: outputs, carried state and gradients."""

from __future__ import annotations

import pytest
import torch

from charlm.cells import MIN_CELLS, MinStack, ResidualStack, linear_scan, make_norm
from charlm.model import CharRNN

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
