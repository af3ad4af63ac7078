"""Does a QRNN-style input convolution help the min cells? Measured before building it into charlm.

    python bench/shift.py [--budget 60s] [--shapes 4x128,4x192] [--cells mingru,minlstm] [--json OUT]

Bradbury et al.'s QRNN computes its gates from a short convolution over the input; with width 2 a
min cell's gates read ``[x_t; x_{t-1}]`` instead of ``x_t`` alone, so each layer sees a bigram before
its recurrence. This trains each shape in residual blocks (feed-forward part twice as wide) twice,
side by side and alternating, with ``charlm train`` as it is (auto chooses learning rate, precision,
dropout) and with every min layer's gates widened to read the previous position too, then evaluates
both with ``charlm eval``'s code on the val split. The widened layer is a prototype: at a window's
first position it reads zeros for ``x_{t-1}`` (a real one would carry the last input in the state).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def widen_min_cells() -> None:
    """Make every min layer charlm builds from now on read ``[x_t; x_{t-1}]`` (this process only)."""
    import torch
    import torch.nn.functional as F

    import charlm.model
    from charlm.cells import MinStack

    class ShiftedMinStack(MinStack):
        def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, **rest):
            if num_layers != 1:
                raise SystemExit("bench/shift.py widens the one-layer cells of a residual block only")
            super().__init__(cell, 2 * input_size, hidden_size, 1, **rest)

        def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            previous = F.pad(x, (0, 0, 1, 0))[:, :-1]  # batch-first: one step later along time
            return super().forward(torch.cat([x, previous], dim=-1), h0)

    charlm.model.MinStack = ShiftedMinStack


def child(shifted: bool, out: str, flags: list[str]) -> None:
    """One training run and its evaluation, in this process; prints one JSON line."""
    if shifted:
        widen_min_cells()
    import charlm
    from charlm.cli import main as cli

    try:
        cli(["train", *flags, "-o", out, "--no-progress", "--no-sample"])
    except SystemExit as exc:
        if exc.code:
            raise
    events = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    model = charlm.load(str(Path(out) / "last.pt"))
    loss = model.evaluate_part(model.own_data("val"))["loss"]
    print(json.dumps({"val_loss": loss, "steps": events[-1]["step"], "tokens": events[-1]["tokens"],
                      "parameters": events[0]["parameters"]}))


def run(shifted: bool, flags: list[str], work: Path) -> dict:
    """One run in its own process (the widening is process-wide)."""
    out = tempfile.mkdtemp(dir=work)
    done = subprocess.run([sys.executable, __file__, "--child", "shifted" if shifted else "plain", out, *flags],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"training failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2] == "shifted", sys.argv[3], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--shapes", default="4x128,4x192")
    parser.add_argument("--cells", default="mingru,minlstm")
    parser.add_argument("--text", default="tinyshakespeare")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from machine import describe

    rows = []
    with tempfile.TemporaryDirectory() as work:
        common = ["--corpus", args.text, "--max-time", args.budget, "--threads", str(args.threads),
                  "--set", "train.sample_length=0"]  # samples need FastStep, which the prototype lacks
        auto = run(False, common, Path(work))  # what charlm auto trains in the same time, for reference
        print(f"charlm auto: {auto['val_loss']:.4f} ({auto['parameters']:,} params, {auto['tokens']:,} tokens)",
              flush=True)
        for cell in args.cells.split(","):
            for shape in args.shapes.split(","):
                layers, hidden = shape.split("x")
                flags = [*common, "--cell", cell, "--block", "residual", "--num-layers", layers, "--hidden-size",
                         hidden, "--set", "model.ffn=2"]
                pair = {name: run(name == "shifted", flags, Path(work)) for name in ("plain", "shifted")}
                rows.append({"cell": cell, "shape": shape, **pair})
                print(f"{cell:<8} {shape:>6}  plain {pair['plain']['val_loss']:.4f} ({pair['plain']['parameters']:,}"
                      f" params, {pair['plain']['tokens']:,} tokens)  shifted {pair['shifted']['val_loss']:.4f}"
                      f" ({pair['shifted']['parameters']:,}, {pair['shifted']['tokens']:,})"
                      f"  shifted minus plain {pair['shifted']['val_loss'] - pair['plain']['val_loss']:+.4f}",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "budget": args.budget, "command": sys.argv[1:],
                                         "auto": auto, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
