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


def test_bf16_on_a_gpu_only_from_ampere_on(monkeypatch):
    """torch.cuda.is_bf16_supported() also says yes where bf16 is emulated (a T4 is 7.5, a V100 7.0)."""
    from charlm.runtime import native_bf16, usable_precisions

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    for capability, native in (((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert native_bf16(torch.device("cuda")) is native
        assert ("bf16" in usable_precisions(torch.device("cuda"))) is native


def test_a_run_saved_without_fp16_resumes_in_fp16_from_a_fresh_scale():
    from charlm.runtime import LossScale

    disabled = LossScale("cpu", enabled=False)
    enabled = LossScale("cpu", enabled=True, init_scale=2.0**10)
    with pytest.raises(RuntimeError):  # what torch's own scaler does: an enabled one refuses an empty state
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict(disabled.state_dict())
    enabled.load_state_dict(disabled.state_dict())
    assert enabled.get_scale() == 2.0**10
    saved = LossScale("cpu", enabled=True, init_scale=2.0**7)
    enabled.load_state_dict(saved.state_dict())  # fp16 resumed in fp16: the scale goes on
    assert enabled.state_dict()["scale"] == 2.0**7
    disabled.load_state_dict(saved.state_dict())  # fp16 resumed in bf16 or fp32: nothing to scale
    assert not disabled.is_enabled()


@pytest.mark.parametrize("fused", [True, False])
def test_an_update_is_skipped_on_the_device_or_by_the_host(fused):
    """The fused AdamW skips itself where told on the device; any other optimizer is told by the host."""
    from charlm.runtime import step_unless

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1, fused=True) if fused else torch.optim.SGD([weight], lr=0.1)
    weight.grad = torch.ones(3)
    step_unless(optimizer, torch.tensor(True))
    assert torch.equal(weight.detach(), torch.ones(3)) and not hasattr(optimizer, "found_inf")
    step_unless(optimizer, torch.tensor(False))
    assert (weight.detach() < 1).all()


def test_fused_kernels_only_where_torch_has_them():
    """clip_grad_norm_(foreach=True) raises on MPS tensors; fused AdamW is CUDA and CPU only."""
    assert runtime.fused_kernels(CPU) and runtime.fused_kernels(torch.device("cuda"))
    assert not runtime.fused_kernels(torch.device("mps"))


def test_the_loss_is_scaled_wherever_half_precision_reaches_the_gradients():
    """bf16 on CUDA too: there cuDNN's RNN runs in fp16 under autocast whatever dtype was asked for."""
    cuda = torch.device("cuda")
    assert runtime.loss_scaling(cuda, "fp16") and runtime.loss_scaling(cuda, "bf16")
    assert not runtime.loss_scaling(cuda, "fp32")
    assert not runtime.loss_scaling(CPU, "bf16") and not runtime.loss_scaling(CPU, "fp32")
    assert not runtime.loss_scaling(torch.device("mps"), "bf16")


def test_no_float64_on_mps():
    mps = torch.device("mps")
    assert runtime.accumulator_dtype(mps) == torch.float32 and runtime.float64_device(mps) == CPU
    assert runtime.accumulator_dtype(CPU) == torch.float64 and runtime.float64_device(CPU) == CPU
    cuda = torch.device("cuda")
    assert runtime.accumulator_dtype(cuda) == torch.float64 and runtime.float64_device(cuda) == cuda


def test_bf16_on_mps_only_where_metal_has_it(monkeypatch):
    mps = torch.device("mps")
    monkeypatch.setattr(runtime, "mps_bf16", lambda: False)
    with pytest.raises(CharlmError, match="Metal has no bf16"):
        runtime.resolve_precision("bf16", mps)
    assert runtime.resolve_precision("auto", mps) == "fp32"
    monkeypatch.setattr(runtime, "mps_bf16", lambda: True)
    assert runtime.resolve_precision("bf16", mps) == "bf16"


def test_each_torchrun_worker_gets_its_own_gpu(monkeypatch):
    """--device cuda:0 under torchrun must not put every rank on GPU 0."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    given = torch.device("cuda", 0)
    assert [runtime.rank_device(given, rank, True) for rank in range(4)] == [torch.device("cuda", r) for r in range(4)]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.rank_device(given, 1, True) == torch.device("cuda", 0)  # two ranks share the one GPU
    assert runtime.rank_device(torch.device("cuda", 3), 0, False) == torch.device("cuda", 3)  # one process: as asked
    assert runtime.rank_device(CPU, 1, True) == CPU


def test_the_nan_verdict_stays_on_the_device_on_a_gpu_with_adamw_only():
    cuda, cpu, mps = torch.device("cuda"), torch.device("cpu"), torch.device("mps")
    assert runtime.nan_check("auto", cuda, "adamw") == "log"
    assert runtime.nan_check("auto", cuda, "sgd") == "step"  # only the fused AdamW skips itself on the device
    assert runtime.nan_check("auto", cpu, "adamw") == "step"  # a CPU pays nothing to read it each step
    assert runtime.nan_check("log", cpu, "adamw") == "log" and runtime.nan_check("step", cuda, "adamw") == "step"
    with pytest.raises(CharlmError, match="train.nan_check log needs the fused AdamW, which torch lacks on mps"):
        runtime.nan_check("log", mps, "adamw")
