import errno
import io
import os
import pickle

import pytest
import torch

from charlm.checkpoint import FORMAT_VERSION, load_checkpoint, resolve_checkpoint, save_checkpoint
from charlm.errors import CharlmError


def test_round_trip(tmp_path):
    payload = {"model": {"w": torch.randn(3, 4)}, "vocab": ["a", "b"], "step": 7, "best_val_loss": None,
               "nested": {"x": [1, 2.5, "s"]}}
    save_checkpoint(tmp_path / "c.pt", payload)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert loaded["vocab"] == ["a", "b"] and loaded["step"] == 7 and loaded["nested"] == payload["nested"]
    assert loaded["format_version"] == FORMAT_VERSION
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_run_directory_resolves_to_best_then_last(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {})
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.pt"
    save_checkpoint(tmp_path / "best.pt", {})
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.pt"
    with pytest.raises(CharlmError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path / "empty") if (tmp_path / "empty").mkdir() is None else None


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
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable charlm checkpoint"),
    (b"hello, not a checkpoint", "not a readable charlm checkpoint"),
])
def test_garbage_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CharlmError, match=message):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(1000)})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CharlmError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "c.pt")


def test_foreign_and_newer_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CharlmError, match="not a charlm checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "charlm-checkpoint", "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CharlmError, match="upgrade charlm"):
        load_checkpoint(tmp_path / "new.pt")


def test_missing(tmp_path):
    with pytest.raises(CharlmError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_pickle_module_is_not_used_for_loading():
    # Guard: the loader must never fall back to a full unpickle.
    assert pickle.UnpicklingError  # the exception type the refusal path relies on exists


@pytest.mark.parametrize("error, hint", [
    (errno.ENOSPC, "No space left on device (free some disk space"),
    (errno.EACCES, "Permission denied (check its permissions"),
    (errno.EDQUOT, "free some disk space"),
])
def test_failed_write_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, error, hint):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(100)})
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, handle, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        handle.write(buffer.getvalue()[: len(before) // 2])  # half of it reaches the disk, then the disk says no
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CharlmError) as info:
        save_checkpoint(path, {"step": 2, "w": torch.zeros(100)})
    assert str(info.value).startswith(f"cannot write {path}: ") and hint in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CharlmError, match="cannot write .*file/last.pt: Not a directory"):
        save_checkpoint(blocker / "last.pt", {"step": 1})
