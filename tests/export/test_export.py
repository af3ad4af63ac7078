"""charlm export: the ONNX step graph run by onnxruntime, the torch-free sampler, and the HTML page in a
real browser, each against CharRNN; bad input, and nothing half-written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import charlm
from charlm.data.vocab import Vocab
from charlm.export.graph import step_graph
from charlm.model.network import CharRNN
from tests.browser import browser_or_skip
from tests.conftest import charlm_cli, make_text, tiny_checkpoint
from tests.train.test_loop import small_config

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]
CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm", "mingru", "minlstm"]
TEXT = make_text(4_000, seed=3)
VOCAB = Vocab.from_text(TEXT)


def _model(cell: str, layers: int, hidden: int = 32, block: str = "plain", norm: str = "layer",
           input_conv: int = 1) -> CharRNN:
    torch.manual_seed(1)
    shape = dict(embedding_size=16) if block == "plain" else dict(block=block, ffn=2, norm=norm)
    if input_conv > 1:
        shape.update(input_conv=input_conv, embedding_size=hidden)
    model = CharRNN(len(VOCAB), cell, hidden, num_layers=layers, **shape).eval()
    with torch.no_grad():  # saturated gates, as a trained model has them
        for name, parameter in model.named_parameters():
            if "weight_hh" in name or "weight_ih" in name:
                parameter.mul_(2.0 if cell != "rnn_relu" else 1.0)
    return model


def _run(session: "ort.InferenceSession", tokens: np.ndarray, layers: int, hidden: int) -> np.ndarray:
    """Log-probabilities (batch, time, vocab) from the graph, the state carried step to step."""
    batch = tokens.shape[0]
    names = [i.name for i in session.get_inputs()][1:]  # after tokens: h, and c or x1, x2, …
    state = {name: np.zeros((layers, batch, hidden), np.float32) for name in names}
    out = []
    for t in range(tokens.shape[1]):
        logits, *new = session.run(None, {"tokens": tokens[:, t].astype(np.int64), **state})
        state = dict(zip(state, new))
        out.append(logits)
    logits = np.stack(out, axis=1).astype(np.float64)
    return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_onnxruntime_reads_a_text_as_charrnn_does(cell, layers):
    _onnxruntime_agrees(_model(cell, layers), cell, layers)


@pytest.mark.parametrize("cell, norm", [("mingru", "layer"), ("minlstm", "rms"), ("lstm", "none")])
def test_onnxruntime_reads_a_text_as_a_residual_charrnn_does(cell, norm):
    _onnxruntime_agrees(_model(cell, 2, block="residual", norm=norm), cell, 2)


@pytest.mark.parametrize("cell, block, input_conv", [("mingru", "plain", 2), ("minlstm", "residual", 3)])
def test_onnxruntime_carries_a_convolving_cells_last_inputs(cell, block, input_conv):
    model = _model(cell, 2, block=block, input_conv=input_conv)
    session = ort.InferenceSession(step_graph(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["tokens", "h", *(f"x{k}" for k in range(1, input_conv))]
    _onnxruntime_agrees(model, cell, 2)


def _onnxruntime_agrees(model: CharRNN, cell: str, layers: int) -> None:
    session = ort.InferenceSession(step_graph(model), providers=["CPUExecutionProvider"])
    ids = VOCAB.encode(TEXT).astype(np.int64)
    tokens = ids[None, :1000]
    with torch.no_grad():
        reference = torch.log_softmax(model(torch.from_numpy(tokens))[0].double(), dim=-1).numpy()
    assert np.abs(_run(session, tokens, layers, 32) - reference).max() < 1e-4
    # A batch of 8 streams: each its own text, each its own result.
    batch = np.stack([ids[i * 300:i * 300 + 200] for i in range(8)])
    with torch.no_grad():
        reference = torch.log_softmax(model(torch.from_numpy(batch))[0].double(), dim=-1).numpy()
    assert np.abs(_run(session, batch, layers, 32) - reference).max() < 1e-4


def _checkpoint(model: CharRNN, path: Path, mode: str = "stream", vocab: Vocab = VOCAB) -> Path:
    tiny_checkpoint(model=model, vocab=vocab, mode=mode).save(path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from charlm.train import train

    root = tmp_path_factory.mktemp("export")
    (root / "text.txt").write_text(make_text(20_000))
    train(small_config(**{"train.max_steps": 20}), root / "text.txt", root / "run", progress=False)
    return root / "run"


def _next(lm, prime: str) -> np.ndarray:
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([lm.kind.start_tokens(lm.vocab, prime)]))
    return torch.softmax(logits[0, -1].double(), dim=-1).numpy()


def _example():
    spec = importlib.util.spec_from_file_location("onnx_sample", ROOT / "examples" / "onnx_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_torch_free_sampler_gives_charlms_next_character_distribution(run, tmp_path):
    out = tmp_path / "model.onnx"
    result = charlm_cli("export", run, "--format", "onnx", "-o", out)
    assert result.returncode == 0 and "wrote" in result.stdout
    lm = charlm.load(run)
    example = _example()
    model = example.Model(str(out))
    assert model.card["vocab"] == lm.vocab.chars and model.card["cell"] == lm.model.cell
    for prime in ("", "the ", "and a"):
        assert np.abs(example.probabilities(model, prime) - _next(lm, prime)).max() < 1e-4
    printed = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_sample.py"), str(out), "--prime", "the ",
                              "--length", "50", "--seed", "1"], capture_output=True, text=True, check=True)
    assert printed.stdout.startswith("the ") and len(printed.stdout) > 20
    again = subprocess.run([sys.executable, str(ROOT / "examples" / "onnx_sample.py"), str(out), "--prime", "the ",
                            "--length", "50", "--seed", "1"], capture_output=True, text=True, check=True)
    assert again.stdout == printed.stdout


def test_a_lines_model_exports_its_marker(tmp_path):
    path = _checkpoint(_model("gru", 1), tmp_path / "lines.pt", mode="stream")
    out = tmp_path / "m.onnx"
    assert charlm_cli("export", path, "--format", "onnx", "-o", out).returncode == 0
    card = json.loads(ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map["charlm"])
    assert card["state"] == ["h"] and card["num_layers"] == 1 and card["line_marker"] is None


def test_bad_input_is_one_line_and_leaves_nothing_behind(run, tmp_path):
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for args, words in (((not_a_checkpoint, "--format", "onnx", "-o", tmp_path / "a.onnx"), "notes.pt"),
                        ((run, "--format", "tflite", "-o", tmp_path / "a.x"), "'tflite' is not one of"),
                        ((run, "--format", "onnx", "-o", a_file / "a.onnx"), "is a file, not a folder"),
                        ((run, "--format", "html", "-o", tmp_path / "no" / "a.html"), "does not exist"),
                        ((run, "--format", "onnx", "--direction", "backward", "-o", tmp_path / "b.onnx"),
                         "reads forward only"),
                        ((run, "--format", "onnx", "--float16", "-o", tmp_path / "c.onnx"), "--float16 applies")):
        result = charlm_cli("export", *args)
        assert result.returncode == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "notes.pt"]


def test_a_failed_write_keeps_the_old_file(run, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    import charlm.export.graph as graph

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(graph, "step_graph", broken)
    assert charlm_cli("export", run, "--format", "onnx", "-o", out).returncode == 1
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def _page_gives_the_models_probabilities(page, lm, tolerance: float) -> None:
    for prime in ("the ", ""):
        got = np.array(page.evaluate("p => window.charlm.probabilities(p)", prime))
        assert np.abs(got - _next(lm, prime)).max() < tolerance


@pytest.mark.slow  # a browser
@pytest.mark.parametrize("cell", CELLS)
def test_the_page_gives_charrnns_probabilities_in_a_real_browser(cell, tmp_path):
    model = _model(cell, 2)
    path = _checkpoint(model, tmp_path / f"{cell}.pt")
    lm = charlm.load(path)
    float16 = cell == "lstm"
    outputs = {}
    for half in (False, True) if float16 else (False,):
        out = tmp_path / f"{cell}{'-16' if half else ''}.html"
        assert charlm_cli("export", path, "--format", "html", "-o", out, *(["--float16"] if half else [])).returncode == 0
        outputs[half] = out
    with browser_or_skip() as browser:
        for half, out in outputs.items():
            page = browser.new_context(bypass_csp=True).new_page()  # Playwright's waits evaluate strings
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(out.as_uri())
            _page_gives_the_models_probabilities(page, lm, 1e-3 if half else 1e-4)
            page.fill("#prompt", "the ")
            page.fill("#length", "60")
            page.fill("#seed", "4")
            page.click("#write")
            page.wait_for_function("!document.getElementById('write').disabled")
            text = page.text_content("#output")
            assert text.startswith("the ") and len(text) == 64
            assert page.evaluate("() => window.charlm.write('the ', 60, 0.8, 4)") == text  # the same seed, the same text
            assert requests == [out.as_uri()]  # the page itself, and nothing from anywhere
            page.context.close()


@pytest.mark.slow  # a browser
def test_the_page_follows_residual_blocks_in_a_real_browser(tmp_path):
    pages = {}
    for cell, norm, conv in (("mingru", "layer", 1), ("minlstm", "rms", 1), ("gru", "none", 1), ("minlstm", "layer", 3)):
        path = _checkpoint(_model(cell, 2, block="residual", norm=norm, input_conv=conv), tmp_path / f"{cell}{conv}.pt")
        assert charlm_cli("export", path, "--format", "html", "-o", tmp_path / f"{cell}{conv}.html").returncode == 0
        pages[tmp_path / f"{cell}{conv}.html"] = charlm.load(path)
    with browser_or_skip() as browser:
        for out, lm in pages.items():
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(out.as_uri())
            _page_gives_the_models_probabilities(page, lm, 1e-4)
            page.context.close()


@pytest.mark.slow  # a browser
def test_a_lines_page_writes_ten_new_lines(tmp_path):
    from charlm.data.vocab import MARKER

    vocab = Vocab(list("abcdefgh") + [MARKER])
    torch.manual_seed(2)
    model = CharRNN(len(vocab), "gru", 16, num_layers=1).eval()
    with torch.no_grad():
        model.head.bias[vocab.marker] += 2.0  # lines end soon
    path = _checkpoint(model, tmp_path / "lines.pt", mode="lines", vocab=vocab)
    out = tmp_path / "lines.html"
    assert charlm_cli("export", path, "--format", "html", "-o", out).returncode == 0
    lm = charlm.load(path)
    with browser_or_skip() as browser:
        page = browser.new_context(bypass_csp=True).new_page()
        page.goto(out.as_uri())
        got = np.array(page.evaluate("p => window.charlm.probabilities(p)", "ab"))
        assert np.abs(got - _next(lm, "ab")).max() < 1e-4  # after the line marker, as charlm starts a line
        page.fill("#seed", "1")
        page.click("#lines")
        lines = page.text_content("#output").split("\n")
        assert len(lines) == 10 and all(set(line) <= set("abcdefgh") for line in lines)
        page.context.close()
