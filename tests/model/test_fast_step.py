import pytest
import torch

from charlm.config import CELLS
from charlm.model.fast_step import FastStep
from charlm.model.network import CharRNN


def _model(cell: str, bidirectional: bool = False, scale: float = 2.0, block: str = "plain",
           input_conv: int = 1) -> CharRNN:
    torch.manual_seed(0)
    shape = dict(embedding_size=48 if input_conv > 1 else 24) if block == "plain" else dict(block=block, ffn=2)
    model = CharRNN(vocab_size=40, cell=cell, hidden_size=48, num_layers=3, bidirectional=bidirectional,
                    input_conv=input_conv, **shape).eval()
    with torch.no_grad():  # larger weights than at init: gates saturate, errors would show
        for name, parameter in model.named_parameters():
            if "weight_hh" in name or "weight_ih" in name:
                parameter.mul_(scale if cell != "rnn_relu" else 1.0)
    return model


def _run_steps(step: FastStep, tokens: torch.Tensor, state) -> torch.Tensor:
    return torch.stack([step(tokens[:, t], state) for t in range(tokens.shape[1])], dim=1)


CONVOLVING = [(cell, block, 1) for cell in CELLS for block in ("plain", "residual")]
CONVOLVING += [("mingru", "plain", 2), ("minlstm", "residual", 3)]  # gates reading their last inputs too


@pytest.mark.parametrize("cell, block, input_conv", CONVOLVING)
def test_fast_step_matches_forward_over_1000_steps(cell, block, input_conv):
    model = _model(cell, block=block, input_conv=input_conv)
    tokens = torch.randint(0, 40, (3, 1000), generator=torch.Generator().manual_seed(1))
    reference, final_state = model(tokens)
    step = FastStep(model)
    state = step.import_state(model.initial_state(3))
    logits = _run_steps(step, tokens, state)
    relative = (logits - reference).abs().max() / reference.abs().max()
    assert relative < 1e-5
    for mine, theirs in zip(_model_layout(state), final_state):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "minlstm"])
def test_fast_step_runs_the_backward_direction(cell):
    model = _model(cell, bidirectional=True)
    tokens = torch.randint(0, 40, (2, 200), generator=torch.Generator().manual_seed(2))
    reference, _ = model(tokens, direction="backward")
    step = FastStep(model, "backward")
    logits = _run_steps(step, tokens, step.import_state(model.initial_state(2)))
    assert (logits - reference).abs().max() / reference.abs().max() < 1e-5
    forward_only = CharRNN(vocab_size=40, cell=cell, hidden_size=8, num_layers=1)
    with pytest.raises(ValueError, match="no 'backward' direction"):
        FastStep(forward_only, "backward")


def test_fast_step_continues_from_a_carried_state_and_leaves_it_alone():
    model = _model("lstm")
    tokens = torch.randint(0, 40, (2, 120), generator=torch.Generator().manual_seed(3))
    reference, _ = model(tokens)
    _, prime_state = model(tokens[:, :100])  # the prime, read by the fused kernel
    kept = tuple(t.clone() for t in prime_state)
    step = FastStep(model)
    logits = _run_steps(step, tokens[:, 100:], step.import_state(prime_state))
    torch.testing.assert_close(logits, reference[:, 100:], rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(prime_state, kept))  # steps update a copy


def _model_layout(state):
    """A step's state as the model keeps it: a (layers, batch, hidden) tensor per state part."""
    return tuple(torch.stack([layer[i] for layer in state.layers]) for i in range(len(state.layers[0])))
