"""The CUDA paths: `pytest -m gpu` (`make test-gpu`) on a machine with a GPU; skipped without one.

Each test is a CPU test of another module run again on the GPU, or a property only a GPU has
(cuDNN's autocast, host syncs, a checkpoint read where no GPU is visible).
"""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from charlm.generate.sample import generate
from charlm.model.fast_step import FastStep
from charlm.model.network import CharRNN
from charlm.runtime import loss_scaling
from charlm.train import session, train
from charlm.train.checkpoint import Checkpoint
from charlm.train.logs import read_metrics
from tests.model.test_fast_step import CELLS, _model, _model_layout, _run_steps
from tests.train.test_distributed import _max_difference, _single, _torchrun
from tests.train.test_loop import request, small_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m gpu on one)")]
CUDA = torch.device("cuda")


@pytest.fixture
def exact_fp32():
    """fp32 as fp32: TF32 tensor cores (charlm's choice for training) round products to 10 bits."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _gpu_config(**overrides):
    return small_config(**{"train.device": "cuda", "train.max_epochs": None, **overrides})


@pytest.mark.parametrize("cell", CELLS)
def test_fast_step_matches_cudnn_forward(cell, exact_fp32):
    model = _model(cell).to(CUDA)
    tokens = torch.randint(0, 40, (3, 300), generator=torch.Generator().manual_seed(1)).to(CUDA)
    reference, final_state = model(tokens)
    step = FastStep(model)
    state = step.import_state(model.initial_state(3))
    logits = _run_steps(step, tokens, state)
    assert (logits - reference).abs().max() / reference.abs().max() < 1e-4
    for mine, theirs in zip(_model_layout(state), final_state):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_sampling_draws_on_the_gpu_with_one_sync_per_character():
    torch.manual_seed(0)
    model = CharRNN(30, "lstm", 64, num_layers=2).to(CUDA).eval()
    runs = [torch.stack(list(generate(model, [0, 1], 40, 4, 0.8, top_k=10, seed=3)))
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (40, 4) and runs[0].max() < 30
    length = 50
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ids in generate(model, [0], length, 2, 1.0, seed=0):
                pass
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= length + 2  # the id read back per character (+ the prime)


def test_sampler_texts_from_a_model_on_the_gpu(tmp_path, text_file):
    train(_gpu_config(**{"train.max_steps": 20}), text_file, tmp_path / "run", progress=False)
    import charlm

    model = charlm.load(tmp_path / "run", device="cuda")
    texts = model.texts(prime="the ", length=60, num_samples=3, seed=1)
    assert len(texts) == 3 and all(t.startswith("the ") and len(t) == 64 for t in texts)
    assert texts == model.texts(prime="the ", length=60, num_samples=3, seed=1)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_learns_in_each_precision(tmp_path, precision):
    if precision == "bf16" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("bf16 needs compute capability 8.0")
    path = tmp_path / "periodic.txt"
    path.write_text("abcdefghij" * 600)
    config = _gpu_config(**{"train.lr": 1e-2, "train.max_steps": 200, "train.precision": precision})
    result = train(config, path, tmp_path / "run", progress=False)
    assert result.best_val_loss < 0.1, precision
    end = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "end"][0]
    assert end["skipped_steps"] == 0


def test_cudnn_runs_the_rnn_in_fp16_under_bf16_autocast_so_the_loss_is_scaled():
    """What loss_scaling assumes: if a torch release makes cuDNN honour bf16, this fails and the
    scale can go."""
    lstm = torch.nn.LSTM(16, 16, batch_first=True).to(CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output, _ = lstm(torch.randn(2, 5, 16, device=CUDA))
    assert loss_scaling(CUDA, "bf16") == (output.dtype == torch.float16)


def test_weight_dropout_trains_on_the_gpu(tmp_path, text_file):
    config = _gpu_config(**{"train.max_steps": 60, "model.weight_dropout": 0.3, "train.lr": 1e-2})
    train(config, text_file, tmp_path / "run", progress=False)
    losses = [e["loss"] for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train"]
    assert losses[-1] < losses[0]


def test_pause_and_resume_on_the_gpu(tmp_path, text_file):
    """cuDNN's RNN kernels are deterministic for a fixed shape; what differs is summation order at
    most, so the resumed run is compared within a small tolerance."""
    whole = train(_gpu_config(**{"train.max_steps": 30}), text_file, tmp_path / "whole", progress=False)
    train(_gpu_config(**{"train.max_steps": 15}), text_file, tmp_path / "paused", progress=False)
    resumed = train(_gpu_config(**{"train.max_steps": 30}), text_file, tmp_path / "paused", resume=True,
                    progress=False)
    assert whole.step == resumed.step == 30
    a, b = Checkpoint.load(tmp_path / "whole" / "last.pt"), Checkpoint.load(tmp_path / "paused" / "last.pt")
    assert _max_difference(a, b) < 1e-5


def test_a_gpu_checkpoint_loads_where_no_gpu_is_visible(tmp_path, text_file):
    train(_gpu_config(**{"train.max_steps": 5, "train.precision": "fp16"}), text_file, tmp_path / "run",
          progress=False)
    script = ("import torch; p = torch.load('last.pt', weights_only=True);"
              "import charlm; m = charlm.load('.'); print(m.texts(length=20, seed=0)[0] != '')")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "run", env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("nan_check, most", [("step", 1), ("log", 0)])
def test_at_most_one_sync_per_training_step_outside_log_intervals(tmp_path, text_file, nan_check, most):
    """One wait per step for the NaN/Inf verdicts with nan_check step; none with log (CUDA's auto)."""
    config = _gpu_config(**{"train.max_steps": 50, "train.log_interval": 1000, "train.eval_interval": 1000,
                            "train.nan_check": nan_check})
    with session(request(config, text_file, tmp_path / "run")) as trainer:
        for _ in range(3):
            trainer.step(trainer.batch())  # warm-up: cuDNN plans, the allocator
        torch.cuda.synchronize()
        steps = 10
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):  # as the loop does
                    trainer.step(trainer.batch())
                    if trainer.run.state.step % trainer.verdict_interval == 0:
                        assert not trainer.read_verdicts()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= most * steps, [str(w.message) for w in syncs[:3]]


def test_two_processes_on_the_gpu_train_as_one(tmp_path):
    from tests.conftest import make_text

    text = tmp_path / "text.txt"
    text.write_text(make_text(20_000))
    ddp = _torchrun(text, "-o", tmp_path / "ddp", "--max-steps", "20", device="cuda")
    assert ddp.returncode == 0, ddp.stderr
    single = _single(text, "-o", tmp_path / "single", "--max-steps", "20", device="cuda")
    assert single.returncode == 0, single.stderr
    a, b = Checkpoint.load(tmp_path / "ddp" / "last.pt"), Checkpoint.load(tmp_path / "single" / "last.pt")
    assert _max_difference(a, b) < 1e-3  # TF32 and cuDNN's sums differ with the batch split


def test_gradient_curves_on_the_gpu_equal_the_cpus():
    import numpy as np

    from charlm.inspection.gradients import gradient_curve

    torch.manual_seed(0)
    model = CharRNN(20, "lstm", 32, num_layers=2)
    tokens = np.random.default_rng(0).integers(0, 20, 5_000).astype(np.int64)
    on_cpu = gradient_curve(model, tokens, "cpu", max_distance=30, positions=16, burn_in=10)
    on_gpu = gradient_curve(model.to(CUDA), tokens, "gpu", max_distance=30, positions=16, burn_in=10)
    assert np.allclose(on_cpu.mean, on_gpu.mean, rtol=1e-8, atol=1e-12)
