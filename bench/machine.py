"""The machine a figure was measured on, as the benchmarks name it beside every number."""

from __future__ import annotations

import os
import platform
from pathlib import Path

SIMD = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd() -> list[str]:
    """Which of the instruction sets that decide CPU speed here (AVX2, AVX-512, native bf16) it has."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [f for f in SIMD if f" {f}" in flags]


def describe(device: str = "cpu") -> str:
    """The CPU, and the GPU where ``device`` is one."""
    cpu = f"{cpu_name()}, {os.cpu_count()} CPUs ({', '.join(simd()) or 'no avx2'})"
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__}) with {cpu}"
    return cpu


if __name__ == "__main__":  # `python bench/machine.py`: the machine, as the figures of docs/ name it
    import sys
    import time

    print(f"{describe(sys.argv[1] if len(sys.argv) > 1 else 'cpu')}, {time.strftime('%Y-%m-%d')}")
