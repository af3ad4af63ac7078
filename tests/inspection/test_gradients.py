"""charlm/inspection/gradients.py: ‖∂L_t/∂x_(t−k)‖ by autograd, checked against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.errors import CharlmError
from charlm.inspection.gradients import gradient_curve, input_gradient_norms, sample_windows
from charlm.model.network import CharRNN


def _loss_from_embedded(model: CharRNN, state, embedded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    stack, head = model.stack_and_head("forward")
    output, _ = stack(embedded, state if model.cell == "lstm" else state[0])
    return F.cross_entropy(head(output[:, -1]), target)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm", "mingru", "minlstm"])
def test_gradient_norms_match_finite_differences(cell):
    torch.manual_seed(0)
    model = CharRNN(7, cell=cell, hidden_size=5, embedding_size=3, num_layers=2).double().eval()
    burn_in, distance = 4, 6
    windows = torch.randint(0, 7, (3, burn_in + distance + 2))
    norms = input_gradient_norms(model, windows, burn_in)
    assert norms.shape == (3, distance + 1)

    eps = 1e-6
    for row in range(3):
        with torch.no_grad():
            _, state = model(windows[row:row + 1, :burn_in])
            embedded = model.embedding(windows[row:row + 1, burn_in:-1])
            target = windows[row:row + 1, -1]
            for k in range(distance + 1):
                position = distance - k  # k steps before the last input
                gradient = torch.zeros(3, dtype=torch.float64)
                for j in range(3):
                    plus, minus = embedded.clone(), embedded.clone()
                    plus[0, position, j] += eps
                    minus[0, position, j] -= eps
                    gradient[j] = (_loss_from_embedded(model, state, plus, target)
                                   - _loss_from_embedded(model, state, minus, target)) / (2 * eps)
                assert norms[row, k].item() == pytest.approx(gradient.norm().item(), rel=1e-5, abs=1e-9)


def test_a_fresh_tanh_rnn_forgets_faster_than_an_lstm():
    from charlm.data.vocab import Vocab
    from tests.conftest import make_text

    text = make_text(20_000)
    vocab = Vocab(sorted(set(text)))
    tokens = vocab.encode(text)
    curves = {}
    for cell in ("rnn_tanh", "lstm"):
        torch.manual_seed(0)
        model = CharRNN(len(vocab), cell=cell, hidden_size=64, embedding_size=32, num_layers=1, forget_bias=1.0)
        curves[cell] = gradient_curve(model, tokens, cell, max_distance=60, positions=64, burn_in=20)
    decay = {cell: curve.mean[60] / curve.mean[1] for cell, curve in curves.items()}
    assert decay["rnn_tanh"] < decay["lstm"] / 10, decay  # the tanh RNN's curve falls far faster
    assert all(np.isfinite(curve.mean).all() for curve in curves.values())


def test_windows_are_seeded_and_a_short_text_is_one_line():
    tokens = np.arange(1000)
    a, b = sample_windows(tokens, 8, 50, seed=3), sample_windows(tokens, 8, 50, seed=3)
    assert (a == b).all() and a.shape == (8, 50)
    assert (np.diff(a, axis=1) == 1).all()  # consecutive characters
    with pytest.raises(CharlmError, match="smaller --max-distance"):
        sample_windows(tokens[:40], 8, 50, seed=0)


def _charlm(*args):
    from tests.conftest import charlm_cli

    return charlm_cli(*args)


def test_cli_compares_fresh_cells_and_a_trained_checkpoint(tmp_path):
    import json

    from charlm.config import build_config
    from charlm.train import train
    from tests.conftest import make_text

    text = tmp_path / "text.txt"
    text.write_text(make_text(6_000))
    settings = {"model.size": "fixed", "train.precision": "fp32", "model.hidden_size": 16, "model.num_layers": 1, "train.batch_size": 4, "train.seq_len": 16,
                "train.max_steps": 5, "train.max_epochs": None, "train.threads": 1, "train.device": "cpu",
                "train.sample_length": 0}
    train(build_config(None, list(settings.items())), text, tmp_path / "run", progress=False)
    config = tmp_path / "small.yaml"
    config.write_text("model: {hidden_size: 16, num_layers: 1}\n")
    small = ["--max-distance", "30", "--positions", "8", "--burn-in", "5"]
    result = _charlm("inspect", "gradients", config, tmp_path / "run", text, "--cells", "rnn_tanh,lstm",
                     "-o", tmp_path / "out", *small)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "gradients.json").read_text())
    labels = [curve["label"] for curve in report["curves"]]
    assert len(labels) == 3 and labels[0].startswith("rnn_tanh 1x16 (fresh") and "trained 5 steps" in labels[2]
    assert all(len(curve["mean"]) == 31 for curve in report["curves"])
    assert (tmp_path / "out" / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stdout.count("k=1 ") == 3

    as_json = _charlm("inspect", "gradients", tmp_path / "run", "--json", "-o", tmp_path / "out2", *small)
    assert as_json.returncode == 0, as_json.stderr
    assert len(json.loads(as_json.stdout)["curves"]) == 1  # the run's own val split

    for args, message in [
        ([text, text], "give at most one text FILE"),
        ([tmp_path / "run", "--cells", "gru"], "--cells builds fresh models from configs"),
        ([tmp_path / "nothing.pt"], "does not exist"),
        ([config, text, "--max-distance", "5000"], "smaller --max-distance"),
        ([config, text, "--cells", "lsmt"], "lsmt"),
    ]:
        result = _charlm("inspect", "gradients", *args, "-o", tmp_path / "err")
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
