"""Device, precision and thread choices, made once and passed to whatever needs them."""

from __future__ import annotations

import contextlib

import torch

from charlm.errors import CharlmError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CharlmError("device cuda requested but no CUDA GPU is available: use --device cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharlmError("device mps requested but Metal is not available: use --device cpu or auto")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (where autocast to bf16 pays off)."""
    if device.type == "cuda":
        # Ampere (compute capability 8.0) and newer. torch.cuda.is_bf16_supported() alone also says yes on a
        # T4 or V100, where bf16 is emulated, slower than fp32.
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` gives bf16 where it is native, else fp32; refuses combinations that cannot work."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name == "bf16" and device.type == "cpu" and not native_bf16(device):
        raise CharlmError(
            "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would run many times slower than fp32"
            " and oneDNN's LSTM rejects it; use --precision fp32 or auto"
        )
    if name == "bf16" and device.type == "mps" and not mps_bf16():
        raise CharlmError("this Mac's Metal has no bf16 (it needs macOS 14 or newer): use --precision fp32 or auto")
    if name == "fp16" and device.type != "cuda":
        raise CharlmError(f"fp16 needs a CUDA GPU (device is {device.type}): use --precision auto, fp32 or bf16")
    return name


def mps_bf16() -> bool:
    """Whether Apple's MPS computes in bf16 here (macOS 14 and newer do; older ones raise on it)."""
    try:
        ones = torch.ones(2, 2, dtype=torch.bfloat16, device="mps")
        return bool((ones @ ones).float().sum().item() == 8.0)
    except (RuntimeError, TypeError):
        return False


def loss_scaling(device: torch.device, precision: str) -> bool:
    """Whether the loss must be scaled so that small gradients survive in half precision: with fp16,
    and with bf16 on CUDA too, because there autocast runs the cuDNN RNN in fp16 whatever dtype it
    was asked for (ATen's autocast wrapper for ``_cudnn_rnn`` casts to half). The recurrent
    gradients are then fp16 and underflow without a scale; the rest of the model runs in bf16."""
    return precision == "fp16" or (precision == "bf16" and device.type == "cuda")


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype to sum many losses in: float64, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def float64_device(device: torch.device) -> torch.device:
    """Where float64 arithmetic can run: ``device``, or the CPU for MPS, which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


def rank_device(device: torch.device, local_rank: int, torchrun: bool) -> torch.device:
    """The GPU a torchrun worker trains on: its own (cuda:LOCAL_RANK), whatever index --device gave,
    so that ranks never pile onto one GPU; with fewer GPUs than ranks on this node, they share them
    in turn. One process keeps the device it was given; other devices are the same for every rank."""
    if device.type != "cuda" or not torchrun:
        return device
    count = max(1, torch.cuda.device_count())
    return torch.device("cuda", local_rank % count)


def prepare_device(device: torch.device) -> None:
    """Process-wide settings for fast kernels on ``device``: TF32 tensor cores for fp32 matrix
    products on CUDA (10 mantissa bits inside the product, fp32 sums; cuDNN's RNN already uses them)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def usable_precisions(device: torch.device) -> list[str]:
    """What precision auto chooses between on ``device``: bf16 where it is native, and fp32."""
    return ["bf16", "fp32"] if native_bf16(device) else ["fp32"]


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision``; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def fused_kernels(device: torch.device) -> bool:
    """Whether torch has the fused AdamW and the foreach gradient clipping on ``device`` (CUDA and CPU;
    on Apple's MPS ``clip_grad_norm_(foreach=True)`` raises)."""
    return device.type in ("cuda", "cpu")


def nan_check(name: str, device: torch.device, optimizer: str) -> str:
    """When the host reads the steps' NaN/Inf verdicts (see ``train.nan_check``): ``log`` only every
    log interval, which needs the fused AdamW (it skips its own update on the device, so nothing
    waits); auto takes it on CUDA, where a read every step stalls the GPU, and ``step`` elsewhere (a
    CPU pays nothing for the read and a warning comes at the step it concerns)."""
    if name == "auto":
        return "log" if device.type == "cuda" and optimizer == "adamw" else "step"
    if name == "log" and not fused_kernels(device):
        raise CharlmError(f"train.nan_check log needs the fused AdamW, which torch lacks on {device.type}:"
                          " use --set train.nan_check=step or auto")
    return name


class LossScale(torch.amp.GradScaler):
    """torch's loss scaler, restorable from any run: one saved in bf16 or fp32 holds a disabled scaler's
    empty state, which an enabled one refuses; resumed in fp16 it starts from a fresh scale (and an
    fp16 run resumed in another precision needs no scale at all)."""

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict and self.is_enabled():
            super().load_state_dict(state_dict)


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()``, unless ``skip`` (a 0-dim bool tensor on the device) is true.

    The fused AdamW decides on the device: torch's fused optimizers (those with
    ``_step_supports_amp_scaling``) read the attributes ``found_inf`` and ``grad_scale`` that
    ``GradScaler.step`` sets on them, and skip their whole update where ``found_inf`` is nonzero; the
    gradients are unscaled already here, so ``grad_scale`` is None. Any other optimizer is told by
    the host, which waits for the device to read ``skip``.
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf, optimizer.grad_scale = skip.float(), None
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale
    elif not skip.item():
        optimizer.step()


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch's kernels; 0 keeps torch's choice (physical cores)."""
    if threads > 0:
        torch.set_num_threads(threads)
