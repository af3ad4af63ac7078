import pytest
import torch

import charlm.runtime as runtime
from charlm.errors import CharlmError

CPU = torch.device("cpu")


def test_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    assert runtime.resolve_precision("auto", CPU) == "fp32"
    with pytest.raises(CharlmError, match="no native bf16"):
        runtime.resolve_precision("bf16", CPU)
    with pytest.raises(CharlmError, match="fp16 needs a CUDA GPU"):
        runtime.resolve_precision("fp16", CPU)
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    assert runtime.resolve_precision("auto", CPU) == "bf16"
    assert runtime.resolve_precision("fp32", CPU) == "fp32"


def test_a_device_that_is_not_there_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CharlmError, match="no CUDA GPU is available: use --device cpu or auto"):
        runtime.resolve_device("cuda")
    if not torch.backends.mps.is_available():
        assert runtime.resolve_device("auto") == CPU
        with pytest.raises(CharlmError, match="Metal is not available"):
            runtime.resolve_device("mps")
    assert runtime.resolve_device("cpu") == CPU


def test_autocast_is_a_no_op_in_fp32_and_casts_in_bf16():
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with runtime.autocast(CPU, "fp32"):
        assert layer(x).dtype == torch.float32
    with runtime.autocast(CPU, "bf16"):
        assert layer(x).dtype == torch.bfloat16


def test_threads_are_set_only_when_asked():
    before = torch.get_num_threads()
    try:
        runtime.set_threads(1)
        assert torch.get_num_threads() == 1
        runtime.set_threads(0)  # 0: leave torch's choice as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
