import pytest
import torch

from charlm.config import CELLS
from charlm.model.network import CharRNN


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_runs_forward_and_backward(cell):
    torch.manual_seed(0)
    model = CharRNN(vocab_size=11, cell=cell, hidden_size=16, num_layers=2, dropout=0.1)
    tokens = torch.randint(0, 11, (3, 7))
    logits, state = model(tokens)
    assert logits.shape == (3, 7, 11)
    assert len(state) == (2 if cell == "lstm" else 1)
    assert all(t.shape == (2, 3, 16) for t in state)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # Carrying the state gives the same result as one long call (dropout off).
    model.eval()
    full, _ = model(tokens)
    first, mid = model(tokens[:, :4])
    second, _ = model(tokens[:, 4:], tuple(t.detach() for t in mid))
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-6)


def _manual_forward(model: CharRNN, tokens: torch.Tensor) -> torch.Tensor:
    """The gate equations written out, step by step and layer by layer."""
    rnn = model.rnn
    hidden = model.hidden_size
    layer_input = model.embedding(tokens)
    batch, steps = tokens.shape
    for layer in range(model.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        h = torch.zeros(batch, hidden, dtype=layer_input.dtype)
        c = torch.zeros(batch, hidden, dtype=layer_input.dtype)
        outputs = []
        for t in range(steps):
            x = layer_input[:, t]
            gi = x @ w_ih.T + b_ih
            gh = h @ w_hh.T + b_hh
            if model.cell == "lstm":
                i_x, f_x, g_x, o_x = gi.chunk(4, dim=1)
                i_h, f_h, g_h, o_h = gh.chunk(4, dim=1)
                input_gate = torch.sigmoid(i_x + i_h)
                forget_gate = torch.sigmoid(f_x + f_h)
                candidate = torch.tanh(g_x + g_h)
                output_gate = torch.sigmoid(o_x + o_h)
                c = forget_gate * c + input_gate * candidate
                h = output_gate * torch.tanh(c)
            else:
                r_x, z_x, n_x = gi.chunk(3, dim=1)
                r_h, z_h, n_h = gh.chunk(3, dim=1)
                reset = torch.sigmoid(r_x + r_h)
                update = torch.sigmoid(z_x + z_h)
                candidate = torch.tanh(n_x + reset * n_h)
                h = (1 - update) * candidate + update * h
            outputs.append(h)
        layer_input = torch.stack(outputs, dim=1)
    return model.head(layer_input)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_cells_compute_the_gate_equations(cell):
    torch.manual_seed(1)
    model = CharRNN(vocab_size=9, cell=cell, hidden_size=8, num_layers=2).double().eval()
    tokens = torch.randint(0, 9, (2, 12))
    fused, _ = model(tokens)
    with torch.no_grad():
        manual = _manual_forward(model, tokens)
    assert torch.allclose(fused, manual, rtol=1e-10, atol=1e-12)


def test_forget_bias_sums_to_the_option():
    model = CharRNN(vocab_size=5, cell="lstm", hidden_size=6, num_layers=3, forget_bias=1.0)
    for layer in range(3):
        total = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.allclose(total[6:12], torch.ones(6))
        assert not torch.allclose(total[:6], torch.ones(6))  # other gates keep their random init


def test_tied_weights_share_one_tensor():
    model = CharRNN(vocab_size=7, hidden_size=12, tie_weights=True)
    assert model.head.weight is model.embedding.weight
    untied = CharRNN(vocab_size=7, hidden_size=12)
    assert model.num_parameters() == untied.num_parameters() - 7 * 12
    with pytest.raises(ValueError):
        CharRNN(vocab_size=7, hidden_size=12, embedding_size=6, tie_weights=True)


@pytest.mark.parametrize("tied", [False, True])
def test_extend_vocab_keeps_old_rows(tied):
    torch.manual_seed(0)
    model = CharRNN(vocab_size=5, hidden_size=8, tie_weights=tied).eval()
    tokens = torch.randint(0, 5, (2, 6))
    before, _ = model(tokens)
    model.extend_vocab(8)
    after, _ = model(tokens)
    assert after.shape[-1] == 8
    assert torch.allclose(after[..., :5], before, atol=1e-6)
    assert (model.head.weight is model.embedding.weight) == tied


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_bidirectional_directions_never_see_what_they_predict(cell, num_layers):
    torch.manual_seed(0)
    model = CharRNN(vocab_size=10, cell=cell, hidden_size=12, num_layers=num_layers, bidirectional=True).eval()
    tokens = torch.randint(0, 10, (2, 16))
    forward, backward = both_directions(model, tokens)
    for t in range(16):
        changed = tokens.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1 + torch.randint(0, 9, changed[:, t + 1:].shape)) % 10
        new_forward, _ = both_directions(model, changed)
        assert torch.equal(new_forward[:, : t + 1], forward[:, : t + 1]), t  # the future is invisible
        changed = tokens.clone()
        changed[:, :t] = (changed[:, :t] + 1 + torch.randint(0, 9, changed[:, :t].shape)) % 10
        _, new_backward = both_directions(model, changed)
        assert torch.equal(new_backward[:, t:], backward[:, t:]), t  # the past is invisible
    # Each direction does depend on what it reads (the test above is not vacuous).
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 10
    assert not torch.equal(both_directions(model, changed)[0][:, 5], forward[:, 5])


def test_bidirectional_shares_the_embedding_and_ties_both_heads():
    model = CharRNN(vocab_size=7, hidden_size=12, bidirectional=True, tie_weights=True)
    assert model.head.weight is model.embedding.weight is model.head_backward.weight
    assert model.rnn is not model.rnn_backward
    single = CharRNN(vocab_size=7, hidden_size=12, tie_weights=True)
    rnn_params = sum(p.numel() for p in single.rnn.parameters())
    assert model.num_parameters() == single.num_parameters() + rnn_params + 7  # + backward stack, head bias
    with pytest.raises(ValueError, match="no 'backward' direction"):
        single(torch.zeros(1, 3, dtype=torch.long), direction="backward")
    model.extend_vocab(9)
    assert model.head_backward.weight is model.embedding.weight and model.head_backward.bias.shape == (9,)


@pytest.mark.parametrize("cell", [c for c in CELLS if not c.startswith("min")])  # min cells have no weight_hh
def test_weight_dropout_masks_recurrent_weights_in_training_only(cell):
    torch.manual_seed(0)
    model = CharRNN(12, cell=cell, hidden_size=16, num_layers=2, weight_dropout=0.5)
    plain = CharRNN(12, cell=cell, hidden_size=16, num_layers=2)
    plain.load_state_dict(model.state_dict())  # the same parameters: nothing extra is stored
    tokens = torch.randint(0, 12, (3, 7))
    model.eval(), plain.eval()
    assert torch.equal(model(tokens)[0], plain(tokens)[0])  # evaluation uses the whole weights
    model.train()
    logits, _ = model(tokens)
    assert not torch.allclose(logits, plain(tokens)[0])
    logits.sum().backward()
    for layer in range(2):
        grad = getattr(model.rnn, f"weight_hh_l{layer}").grad
        zero_share = (grad == 0).float().mean().item()
        assert 0.35 < zero_share < 0.65  # about half the recurrent weights were dropped for this batch
        assert (getattr(model.rnn, f"weight_ih_l{layer}").grad != 0).float().mean() > 0.9  # input weights untouched


@pytest.mark.parametrize("cell, block", [("lstm", "plain"), ("minlstm", "plain"), ("mingru", "residual"),
                                         ("lstm", "residual")])
def test_layer_groups_cover_every_parameter_once(cell, block):
    model = CharRNN(10, cell=cell, hidden_size=8, num_layers=3, bidirectional=True, block=block,
                    ffn=2 if block == "residual" else 0)
    groups = model.layer_groups()
    assert set(groups) == {"embedding", "layer0", "layer1", "layer2", "head",
                           "backward_layer0", "backward_layer1", "backward_layer2", "backward_head"}
    assert sum(p.numel() for ps in groups.values() for p in ps) == model.num_parameters()


def test_a_residual_block_needs_the_embedding_as_wide_as_the_cells():
    with pytest.raises(ValueError, match="embedding_size == hidden_size"):
        CharRNN(10, "mingru", 16, embedding_size=8, block="residual")
    with pytest.raises(ValueError, match="weight_dropout"):
        CharRNN(10, "mingru", 16, weight_dropout=0.2)


def test_one_forget_bias_default_for_the_config_the_model_and_the_probe():
    from charlm.config import ModelConfig

    hidden = 4
    for model in (CharRNN(5, "lstm", hidden, num_layers=2), CharRNN.from_config(ModelConfig(hidden_size=hidden), 5)):
        for layer in range(2):
            total = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
            assert torch.equal(total[hidden:2 * hidden], torch.full((hidden,), ModelConfig().forget_bias)), layer


def both_directions(model, tokens):
    """Forward and backward logits aligned with ``tokens`` (fresh state, one window): ``forward[:, t]``
    predicts ``tokens[:, t + 1]`` from ``tokens[:, :t + 1]``; ``backward[:, t]`` predicts
    ``tokens[:, t - 1]`` from ``tokens[:, t:]``."""
    forward, _ = model(tokens)
    backward, _ = model(tokens.flip(1), direction="backward")
    return forward, backward.flip(1)


def _stepped(cell: str, x: torch.Tensor, weights: dict, h: torch.Tensor, c: torch.Tensor | None):
    """One layer over ``x`` (batch, time, width), step by step: the gate equations written out."""
    outputs = []
    for t in range(x.shape[1]):
        gi = x[:, t] @ weights["weight_ih"].T + weights["bias_ih"]
        gh = h @ weights["weight_hh"].T + weights["bias_hh"]
        if cell == "lstm":
            (i_x, f_x, g_x, o_x), (i_h, f_h, g_h, o_h) = gi.chunk(4, dim=1), gh.chunk(4, dim=1)
            c = torch.sigmoid(f_x + f_h) * c + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
            h = torch.sigmoid(o_x + o_h) * torch.tanh(c)
        elif cell == "gru":
            (r_x, z_x, n_x), (r_h, z_h, n_h) = gi.chunk(3, dim=1), gh.chunk(3, dim=1)
            update = torch.sigmoid(z_x + z_h)
            h = (1 - update) * torch.tanh(n_x + torch.sigmoid(r_x + r_h) * n_h) + update * h
        else:
            h = torch.tanh(gi + gh)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h, c


def _naive_locked(model: CharRNN, tokens: torch.Tensor, state: tuple, p: dict) -> tuple[torch.Tensor, list]:
    """The training forward pass with locked dropout, masks drawn one by one in the model's order
    (embedding, each layer's recurrent weights, each layer's input after the first, the head's input)."""
    def mask(width):
        return torch.empty(batch, 1, width, dtype=torch.float64).bernoulli_(1 - p["dropout"]) / (1 - p["dropout"])

    batch = tokens.shape[0]
    x = model.embedding(tokens)
    x = x * torch.empty(batch, 1, x.shape[-1], dtype=torch.float64).bernoulli_(1 - p["embedding"]) / (1 - p["embedding"])
    layers = [{name: getattr(model.rnn, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
              for k in range(model.num_layers)]
    for weights in layers:
        weights["weight_hh"] = torch.nn.functional.dropout(weights["weight_hh"], p["weight"])
    finals = []
    for k, weights in enumerate(layers):
        if k:
            x = x * mask(x.shape[-1])
        x, h, c = _stepped(model.cell, x, weights, state[0][k], state[1][k] if len(state) > 1 else None)
        finals.append((h, c))
    return model.head(x * mask(x.shape[-1])), finals


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_locked_dropout_runs_the_fused_layers_as_the_naive_steps_with_one_mask_per_sequence(cell):
    """A fused stack of three layers with locked dropout (and DropConnect) runs layer by layer on its own
    parameters; from a carried state it gives what the gate equations give with the same masks."""
    p = {"dropout": 0.3, "embedding": 0.2, "weight": 0.25}
    torch.manual_seed(2)
    model = CharRNN(vocab_size=10, cell=cell, hidden_size=6, embedding_size=5, num_layers=3, dropout=p["dropout"],
                    embedding_dropout=p["embedding"], weight_dropout=p["weight"], dropout_mask="locked").double()
    tokens = torch.randint(0, 10, (4, 9))
    state = tuple(torch.randn(3, 4, 6, dtype=torch.float64) for _ in range(model.state_size))
    torch.manual_seed(7)
    logits, new_state = model.train()(tokens, state)
    torch.manual_seed(7)
    with torch.no_grad():
        expected, finals = _naive_locked(model, tokens, state, p)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new_state[0], torch.stack([h for h, _ in finals]), rtol=1e-10, atol=1e-12)
    if cell == "lstm":
        torch.testing.assert_close(new_state[1], torch.stack([c for _, c in finals]), rtol=1e-10, atol=1e-12)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("cell, block", [("mingru", "plain"), ("lstm", "residual")])
def test_locked_dropout_holds_one_mask_per_sequence_in_min_and_residual_stacks(cell, block):
    """Ones in, one layer's worth of dropout out: with locked masks every time step sees the same units dropped."""
    torch.manual_seed(0)
    model = CharRNN(vocab_size=7, cell=cell, hidden_size=12, num_layers=2, dropout=0.5, dropout_mask="locked",
                    block=block).train()
    seen = []
    model.head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model(torch.randint(0, 7, (3, 8)))
    dropped = seen[0] == 0  # (batch, time, hidden): the head's input after its locked dropout
    assert dropped.any() and torch.equal(dropped, dropped[:, :1].expand_as(dropped))


def test_element_dropout_stays_the_fused_kernels_own():
    """The default masks are drawn as before: the same run, bit for bit, as a stack told nothing of locking."""
    torch.manual_seed(4)
    model = CharRNN(vocab_size=9, cell="lstm", hidden_size=8, num_layers=2, dropout=0.2).train()
    tokens = torch.randint(0, 9, (2, 6))
    torch.manual_seed(5)
    logits, _ = model(tokens)
    torch.manual_seed(5)
    output, _ = model.rnn(model.embedding(tokens))
    assert torch.equal(logits, model.head(torch.nn.functional.dropout(output, 0.2)))


def test_a_min_stack_applies_its_locked_mask_between_layers_as_a_naive_two_layer_stack_would():
    from charlm.model.cells import MinStack

    torch.manual_seed(1)
    model = CharRNN(vocab_size=8, cell="mingru", hidden_size=6, num_layers=2, dropout=0.4,
                    dropout_mask="locked").double().train()
    tokens = torch.randint(0, 8, (3, 5))
    h = torch.randn(2, 3, 6, dtype=torch.float64)
    torch.manual_seed(9)
    logits, _ = model(tokens, (h,))
    layers = []
    for k in range(2):
        one = MinStack("mingru", 6, 6).double()
        one.weight_ih_l0.data, one.bias_ih_l0.data = model.rnn.weight_ih_l1 if k else model.rnn.weight_ih_l0, \
            model.rnn.bias_ih_l1 if k else model.rnn.bias_ih_l0
        layers.append(one)
    torch.manual_seed(9)
    with torch.no_grad():
        between = torch.empty(3, 1, 6, dtype=torch.float64).bernoulli_(0.6) / 0.6
        head_mask = torch.empty(3, 1, 6, dtype=torch.float64).bernoulli_(0.6) / 0.6
        y, _ = layers[0](model.embedding(tokens), h[:1])
        y, _ = layers[1](y * between, h[1:])
        expected = model.head(y * head_mask)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-12)
