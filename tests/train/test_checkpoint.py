import errno
import io
import os
from pathlib import Path

import pytest
import torch

from charlm.errors import CharlmError
from charlm.train.checkpoint import FORMAT_VERSION, Checkpoint, resolve_checkpoint
from tests.conftest import tiny_checkpoint


def test_round_trip_through_a_plain_file(tmp_path):
    state = {"best_val_loss": 1.25, "evals_since_best": 2, "bad_steps": 1, "skipped_steps": 3, "train_time": 12.5,
             "tokens_seen": 4096}
    saved = tiny_checkpoint(step=7, **state)
    saved.parts["streams"] = {"forward": [torch.randn(1, 4, 8), torch.randn(1, 4, 8)]}
    saved.parts["log_window"] = {"loss_forward": 3.5, "grad_norm": 0.25, "good_steps": 2.0}
    saved.save(tmp_path / "c.pt")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    plain = torch.load(tmp_path / "c.pt", weights_only=True)  # no charlm needed to read the weights
    assert plain["format_version"] == FORMAT_VERSION and set(plain["model"]) == set(saved.weights)

    loaded = Checkpoint.load(tmp_path / "c.pt")
    assert loaded.step == 7 and loaded.vocab == saved.vocab and loaded.config == saved.config
    assert all(torch.equal(loaded.weights[k], saved.weights[k]) for k in saved.weights)
    for key, value in state.items():
        assert getattr(loaded.state, key) == value, key
    assert all(torch.equal(a, b) for a, b in zip(loaded.parts["streams"]["forward"], saved.parts["streams"]["forward"]))
    assert loaded.parts["log_window"] == saved.parts["log_window"] and loaded.source == str(tmp_path / "c.pt")
    assert loaded.summary()["step"] == 7 and loaded.summary()["format_version"] == FORMAT_VERSION


def test_the_published_weights_are_the_average_where_there_is_one():
    checkpoint = tiny_checkpoint()
    model = checkpoint.build_model()
    assert all(torch.equal(model.state_dict()[k], checkpoint.weights[k]) for k in checkpoint.weights)
    averaged = {k: torch.zeros_like(v) for k, v in checkpoint.parts["model"].items()}
    checkpoint.parts["average"] = {"model": averaged, "updates": 3}
    assert all((v == 0).all() for v in checkpoint.build_model().state_dict().values())
    assert not all((v == 0).all() for v in checkpoint.build_model(raw=True).state_dict().values())


def test_every_earlier_format_is_lifted_one_version_at_a_time():
    from charlm.train.checkpoint import MIGRATIONS

    assert sorted(MIGRATIONS) == list(range(1, FORMAT_VERSION))


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("version", [1, 2])
def test_real_old_checkpoints_still_sample_evaluate_and_resume_exactly(tmp_path, version):
    """tests/train/fixtures/format-N.checkpoint: last.pt of a real run written by the charlm of that format
    (format 1: commit 2425935, format 2: efa266b), 10 steps of
    `charlm train text.txt --hidden-size 12 --num-layers 2 --dropout 0.1 --batch-size 4 --seq-len 8
    --max-steps 10 --set train.eval_interval=5 --set train.sample_length=0 --threads 1` on
    pseudo_english(20000, seed=0). Resumed to step 20 here it ends where a run trained here from
    scratch with its config ends, bit for bit."""
    import shutil

    import charlm
    from charlm.config import all_keys
    from charlm.data.synthetic import pseudo_english
    from charlm.train import plan, run, train

    text = tmp_path / "text.txt"
    text.write_text(pseudo_english(20_000, seed=0), encoding="utf-8")
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(FIXTURES / f"format-{version}.checkpoint", old / "last.pt")
    checkpoint = Checkpoint.load(old)
    assert (checkpoint.format_version, checkpoint.step) == (version, 10)
    model = charlm.load(old)
    assert model.sample("The ", length=10, seed=0).startswith("The ")
    assert model.evaluate(text.read_text())["loss"] > 0

    run(plan(None, [("data.path", str(text)), ("train.max_steps", 20)], resume_dir=old, progress=False))
    config = checkpoint.config
    config.train.max_steps = 20
    train(config, text, tmp_path / "whole", progress=False, given=all_keys())  # the run's config, every key
    whole, resumed = Checkpoint.load(tmp_path / "whole" / "last.pt"), Checkpoint.load(old / "last.pt")
    assert resumed.format_version == FORMAT_VERSION and resumed.step == 20
    # Bit for bit only where this CPU's kernels round as the fixture's did (its first 10 steps come out the
    # same here); on another kind (AVX-512 against AVX2) the same run differs in its last bits.
    config.train.max_steps = 10
    train(config, text, tmp_path / "first", progress=False, given=all_keys())
    first = Checkpoint.load(tmp_path / "first" / "last.pt")
    if all(torch.equal(first.weights[k], checkpoint.weights[k]) for k in first.weights):
        assert all(torch.equal(whole.weights[k], resumed.weights[k]) for k in whole.weights)
    else:
        for k in whole.weights:
            torch.testing.assert_close(resumed.weights[k], whole.weights[k], rtol=1e-3, atol=1e-4)


def test_a_charlm_file_with_parts_missing_is_damaged_not_a_crash(tmp_path):
    payload = tiny_checkpoint().to_dict()
    del payload["state"]
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(CharlmError, match="damaged charlm checkpoint \\(KeyError: 'state'\\)"):
        Checkpoint.load(tmp_path / "c.pt")
    checkpoint = tiny_checkpoint()
    checkpoint.parts["model"]["head.bias"] = torch.zeros(3)
    with pytest.raises(CharlmError, match="damaged charlm checkpoint: its weights do not fit its model"):
        checkpoint.build_model()


def test_run_directory_resolves_to_best_then_last(tmp_path):
    tiny_checkpoint().save(tmp_path / "last.pt")
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.pt"
    tiny_checkpoint().save(tmp_path / "best.pt")
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.pt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharlmError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create a file when unpickled


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "charlm-checkpoint", "format_version": 1, "x": _Payload(str(marker))}, path)
    with pytest.raises(CharlmError, match="refused"):
        Checkpoint.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable charlm checkpoint"),
    (b"hello, not a checkpoint", "not a readable charlm checkpoint"),
])
def test_garbage_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CharlmError, match=message):
        Checkpoint.load(path)


def test_truncated_file(tmp_path):
    tiny_checkpoint().save(tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CharlmError, match="truncated or corrupt"):
        Checkpoint.load(tmp_path / "c.pt")


def test_foreign_and_newer_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CharlmError, match="not a charlm checkpoint"):
        Checkpoint.load(tmp_path / "other.pt")
    torch.save({"format": "charlm-checkpoint", "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CharlmError, match="upgrade charlm"):
        Checkpoint.load(tmp_path / "new.pt")


def test_missing(tmp_path):
    with pytest.raises(CharlmError, match="not found"):
        Checkpoint.load(tmp_path / "nope.pt")


@pytest.mark.parametrize("error, hint", [
    (errno.ENOSPC, "No space left on device (free some disk space"),
    (errno.EACCES, "Permission denied (check its permissions"),
    (errno.EDQUOT, "free some disk space"),
])
def test_failed_write_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, error, hint):
    path = tmp_path / "last.pt"
    tiny_checkpoint(step=1).save(path)
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, handle, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        handle.write(buffer.getvalue()[: len(before) // 2])  # half of it reaches the disk, then the disk says no
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CharlmError) as info:
        tiny_checkpoint(step=2).save(path)
    assert str(info.value).startswith(f"cannot write {path}: ") and hint in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before and Checkpoint.load(path).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CharlmError, match="cannot write .*file/last.pt: Not a directory"):
        tiny_checkpoint().save(blocker / "last.pt")


def test_every_tensor_is_written_from_the_cpu():
    """A checkpoint of a GPU run must load with plain torch.load on a machine without that GPU: the
    optimizer state and the RNG states nest tensors in dicts, lists and tuples."""
    from charlm.train.checkpoint import on_cpu

    payload = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3), "step": torch.tensor(4.0)}},
                                                          "param_groups": [{"lr": 0.1, "params": [0]}]},
               "rng": {"cuda": [torch.zeros(4, dtype=torch.uint8)]}, "pair": (torch.ones(1), 5), "name": "x"}
    moved = on_cpu(payload)
    assert moved["optimizer"]["param_groups"] == payload["optimizer"]["param_groups"] and moved["name"] == "x"
    assert isinstance(moved["pair"], tuple) and moved["pair"][1] == 5 and isinstance(moved["rng"]["cuda"], list)
    tensors = [moved["model"]["w"], moved["optimizer"]["state"][0]["exp_avg"], moved["optimizer"]["state"][0]["step"],
               moved["rng"]["cuda"][0], moved["pair"][0]]
    assert all(t.device.type == "cpu" for t in tensors)
