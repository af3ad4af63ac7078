"""Which way to run a min cell's recurrence h_t = a_t * h_{t-1} + b_t over a training window is fastest.

    python bench/scan.py [--device cpu|cuda] [--threads 2] [--json OUT]

Forward and backward over (time, batch 32, hidden) windows, for each of:
- ``loop``: charlm.model.cells.linear_scan, an elementwise loop over time with a hand-written backward (charlm's);
- ``autograd``: the same loop with autograd recording every step (what plain PyTorch gives);
- ``log``: Heinsen (2023)'s log-space scan, ``exp(a* + logcumsumexp(log b - a*))`` with ``a* = cumsum(log a)``
  (it needs b > 0: the paper's minGRU makes its candidate positive for it; timed here on positive b);
- ``compiled``: ``torch.compile`` of the autograd loop, where a compiler is present.
Also the whole layer's share: the gates' matrix product over the window, against which the scan is small.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402

from charlm.model.cells import linear_scan  # noqa: E402


def autograd_loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    h, out = h0, []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return torch.stack(out)


def log_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    log_a = torch.log(a)
    a_star = torch.cumsum(log_a, dim=0)
    log_h0 = torch.log(h0).unsqueeze(0) + a_star  # h0's share of every h_t
    log_values = torch.logcumsumexp(torch.log(b) - a_star, dim=0) + a_star
    return torch.exp(torch.logaddexp(log_values, log_h0))


def timed(function, a, b, h0, device: torch.device, seconds: float = 1.0) -> float:
    """Milliseconds per forward + backward."""
    def once() -> None:
        grad_a, grad_b, grad_h = (t.detach().requires_grad_() for t in (a, b, h0))
        function(grad_a, grad_b, grad_h).sum().backward()

    for _ in range(2):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started, count = time.perf_counter(), 0
    while count < 3 or time.perf_counter() - started < seconds:
        once()
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - started) / count


def gates_matmul(time_steps: int, hidden: int, device: torch.device) -> float:
    x = torch.randn(time_steps, 32, hidden, device=device)
    w = torch.randn(2 * hidden, hidden, device=device, requires_grad=True)
    return timed(lambda a, b, h0: torch.nn.functional.linear(x * a[..., :1].mean(), w), x, x, x[0], device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = {"loop": linear_scan, "autograd": autograd_loop, "log": log_scan}
    try:
        compiled = torch.compile(autograd_loop, dynamic=False)
        compiled(*(torch.rand(4, 2, 3, device=device) for _ in range(2)), torch.rand(2, 3, device=device))
        methods["compiled"] = compiled
    except Exception as error:  # no C++ compiler, no Triton: the fallback the product takes too
        print(f"torch.compile unavailable here: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
    machine = describe(args.device)
    print(f"{machine}; ms per forward + backward, batch 32")
    rows = []
    for time_steps, hidden in ((64, 256), (64, 512), (128, 512), (256, 1024)):
        generator = torch.Generator().manual_seed(0)
        a = torch.rand(time_steps, 32, hidden, generator=generator).mul(0.9).add(0.05).to(device)
        b = torch.rand(time_steps, 32, hidden, generator=generator).add(0.01).to(device)
        h0 = torch.rand(32, hidden, generator=generator).add(0.01).to(device)
        row = {"time": time_steps, "hidden": hidden,
               **{name: round(timed(method, a, b, h0, device), 3) for name, method in methods.items()},
               "gates_matmul": round(gates_matmul(time_steps, hidden, device), 3)}
        rows.append(row)
        print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    out = args.json or ROOT / "bench" / "results" / f"scan-{time.strftime('%Y%m%d')}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"{machine}, {time.strftime('%Y-%m-%d')}", "threads": args.threads,
                               "rows": rows, "command": " ".join(["python", *sys.argv])}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
