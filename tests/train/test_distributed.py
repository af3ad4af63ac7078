"""torchrun data parallelism on the CPU (gloo): two processes train what one process would."""

import subprocess
import sys

import pytest

from charlm.train.checkpoint import Checkpoint
from charlm.train.logs import read_metrics

SETTINGS = ["--set", "model.size=fixed", "--hidden-size", "32", "--num-layers", "2", "--batch-size", "8", "--seq-len", "16",
            "--max-epochs", "100", "--no-progress", "--no-sample", "--set", "train.eval_interval=10",
            "--set", "train.log_interval=5", "--set", "train.warmup_steps=0", "--set", "train.lr_schedule=constant",
            "--set", "train.sample_length=0", "--precision", "fp32"]


def _torchrun(*args, processes=2, device="cpu"):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "charlm", "train", *map(str, args), *SETTINGS, "--device", device]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _single(*args, device="cpu"):
    """The same `charlm train` in one process (this one)."""
    from tests.conftest import charlm_cli

    return charlm_cli("train", *args, *SETTINGS, "--threads", "1", "--device", device)


@pytest.fixture
def text(tmp_path):
    from tests.conftest import make_text

    path = tmp_path / "text.txt"
    path.write_text(make_text(20_000))
    return path


def _max_difference(a, b):
    return max((a.weights[key] - b.weights[key]).abs().max().item() for key in a.weights)


@pytest.mark.slow
def test_two_processes_train_as_one_and_resume(tmp_path, text):
    first = _torchrun(text, "-o", tmp_path / "ddp", "--max-steps", "15")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("stopped (max_steps) at step 15") == 1  # rank 0 alone reports
    resumed = _torchrun("--resume", tmp_path / "ddp", "--max-steps", "30")
    assert resumed.returncode == 0, resumed.stderr
    assert "terminate called" not in first.stderr + resumed.stderr  # the process group is left before exit
    whole = _single(text, "-o", tmp_path / "single", "--max-steps", "30")
    assert whole.returncode == 0, whole.stderr

    ddp, single = Checkpoint.load(tmp_path / "ddp" / "last.pt"), Checkpoint.load(tmp_path / "single" / "last.pt")
    assert ddp.step == 30
    assert ddp.parts["streams"]["forward"][0].shape == single.parts["streams"]["forward"][0].shape  # all 8 streams, as one process
    assert _max_difference(ddp, single) < 1e-5  # the same updates, up to the order of float sums

    losses = [e["loss"] for e in read_metrics(tmp_path / "ddp" / "metrics.jsonl") if e["event"] == "train"]
    expected = [e["loss"] for e in read_metrics(tmp_path / "single" / "metrics.jsonl") if e["event"] == "train"]
    assert losses == pytest.approx(expected, rel=1e-5) and losses[-1] < losses[0]
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")) == [
        "best.pt", "config.yaml", "last.pt", "metrics.jsonl", "tensorboard"]

    # A torchrun checkpoint is an ordinary one: one process resumes it too.
    more = _single("--resume", tmp_path / "ddp", "--max-steps", "35")
    assert more.returncode == 0, more.stderr
    assert Checkpoint.load(tmp_path / "ddp" / "last.pt").step == 35


@pytest.mark.slow
def test_a_batch_that_does_not_split_is_one_line(tmp_path, text):
    result = _torchrun(text, "-o", tmp_path / "ddp", "--max-steps", "5", "--set", "train.batch_size=7")
    assert result.returncode != 0
    assert "train.batch_size (7) must divide evenly between the 2 processes: use a multiple of 2" in result.stderr
    assert "charlm/train.py" not in result.stderr and "charlm/train/distributed.py" not in result.stderr  # no traceback of ours


def test_nccl_only_when_every_rank_has_a_gpu_of_its_own():
    from charlm.train.distributed import choose_backend

    assert choose_backend(use_cuda=True, gpus=2, local_world=2) == "nccl"
    assert choose_backend(use_cuda=True, gpus=1, local_world=2) == "gloo"  # NCCL refuses two ranks on one GPU
    assert choose_backend(use_cuda=False, gpus=0, local_world=2) == "gloo"


def test_the_small_collectives_use_the_groups_device(monkeypatch):
    """NCCL takes only CUDA tensors: agree, broadcast and sum must build theirs on the group's
    device, not on the CPU (what crashed torchrun on CUDA at step 1)."""
    import torch
    import torch.distributed as dist

    from charlm.train.distributed import Distributed

    seen = []
    ranks = Distributed(rank=0, world=2, device=torch.device("cpu"))
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None: seen.append(("all_reduce", tensor.device)))
    monkeypatch.setattr(dist, "broadcast", lambda tensor, src: seen.append(("broadcast", tensor.device)))
    real_tensor = torch.tensor

    def tensor_on(*args, device=None, **kwargs):  # every tensor the collectives build must name a device
        seen.append(("built", device))
        return real_tensor(*args, **kwargs)

    monkeypatch.setattr(torch, "tensor", tensor_on)
    assert ranks.agree(2, 1.5) == (2, 1.5)
    assert ranks.broadcast(0.25) == 0.25 and ranks.broadcast(None) is None
    ranks.sum(real_tensor([1.0, 2.0]))
    assert [device for kind, device in seen if kind == "built"] == [ranks.device] * 3
    assert all(device == ranks.device for kind, device in seen if kind != "built")
