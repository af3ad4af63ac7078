"""How steady is the probe's choice of precision? Timings one after the other against timings in turns.

    python bench/probe.py [--rounds 8] [--shape 2x256] [--cell lstm] [--steady 6] [--json OUT]

auto's probe settles the precision from short timings (``auto.time_trainings``, at least 0.25 s
apiece) of one shape in bf16 and in fp32. Each round here times that shape both ways, the order
alternating between rounds: one precision and then the other (as the probe timed them before
2026-12-02, though each by its median step here), and both in turns, a step of each at a time (as
it times them now). Both ways print
bf16's speed over fp32's, and how many rounds would have chosen fp32 (below auto.PRECISION_MARGIN).
The reference is the same ratio from ``--steady`` seconds apiece in turns, taken before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def ratio(seconds: dict[str, float]) -> float:
    return seconds["fp32"] / seconds["bf16"]  # seconds per token: bf16's speed over fp32's


def one_after_the_other(shape, vocab: int, device, first: str) -> float:
    from charlm.train import auto

    order = [first, "fp32" if first == "bf16" else "bf16"]
    return ratio({p: auto.time_trainings([(shape, p)], vocab, device)[0] for p in order})


def in_turns(shape, vocab: int, device, first: str, seconds: float | None = None) -> float:
    from charlm.train import auto

    order = [first, "fp32" if first == "bf16" else "bf16"]
    timed = auto.time_trainings([(shape, p) for p in order], vocab, device,
                                **({"min_seconds": seconds} if seconds else {}))
    return ratio(dict(zip(order, timed)))


def summary(ratios: list[float], margin: float) -> dict:
    return {"ratios": [round(r, 3) for r in ratios], "min": round(min(ratios), 3),
            "median": round(statistics.median(ratios), 3), "max": round(max(ratios), 3),
            "would_choose_fp32": sum(r < margin for r in ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--shape", default="2x256", help="LAYERSxWIDTH")
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--steady", type=float, default=6.0, help="seconds apiece of the reference timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch
    from machine import describe

    from charlm.runtime import native_bf16
    from charlm.train import auto

    torch.set_num_threads(args.threads)
    if args.cell in ("lstm", "gru", "rnn") and not native_bf16(torch.device("cpu")):
        sys.exit(f"probe.py: this CPU has no native bf16 (avx512_bf16 or AMX), so oneDNN's {args.cell} refuses it"
                 " and auto never weighs it here; run it on a CPU that has one, or time a min cell (--cell mingru)")
    layers, width = (int(n) for n in args.shape.split("x"))
    shape, vocab, device = auto.Shape(width, layers, min(auto.EMBEDDING, width), args.cell), 65, torch.device("cpu")
    header = f"probe steadiness, {args.shape} {args.cell}, {args.threads} threads, {describe()}, {time.strftime('%Y-%m-%d')}"
    print(header, flush=True)
    steady = [in_turns(shape, vocab, device, "bf16", args.steady)]
    apart, turns = [], []
    for number in range(args.rounds):
        first = ("bf16", "fp32")[number % 2]
        for method, into in ((one_after_the_other, apart), (in_turns, turns))[::1 if number % 2 else -1]:
            into.append(method(shape, vocab, device, first))
        print(f"  round {number + 1}: one after the other {apart[-1]:.3f}, in turns {turns[-1]:.3f}", flush=True)
    steady.append(in_turns(shape, vocab, device, "fp32", args.steady))
    margin = auto.PRECISION_MARGIN
    result = {"machine": header, "command": " ".join(["python", *sys.argv]), "margin": margin,
              "steady": [round(r, 3) for r in steady], "one_after_the_other": summary(apart, margin),
              "in_turns": summary(turns, margin)}
    for name in ("one_after_the_other", "in_turns"):
        r = result[name]
        print(f"{name.replace('_', ' '):>20}: bf16/fp32 speed min {r['min']:.3f}  median {r['median']:.3f}  max"
              f" {r['max']:.3f}; {r['would_choose_fp32']} of {args.rounds} rounds would choose fp32")
    print(f"{'steady':>20}: {', '.join(f'{r:.3f}' for r in steady)} ({args.steady:g} s apiece, in turns)")
    out = args.json or ROOT / "bench" / "results" / f"probe-{time.strftime('%Y%m%d')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
