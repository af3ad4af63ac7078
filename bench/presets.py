"""Train presets on a corpus for their time budgets and report val loss and throughput.

    python bench/presets.py configs/tinyshakespeare-60s.yaml [more.yaml …] [--text FILE] [--json OUT]

Each preset runs as a real `charlm train` in a subprocess (one at a time: the machine's cores are
shared), then `charlm eval --json` reads the val loss of its best checkpoint. The table printed at
the end is what docs/performance.md shows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402

DEFAULT_TEXT = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def run_preset(config: Path, text: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "charlm", "train", str(text), "-c", str(config), "-o", str(out),
               "--no-progress", "--no-sample", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_events = [e for e in events if e["event"] == "train"]
    end = next(e for e in reversed(events) if e["event"] == "end")
    start = next(e for e in events if e["event"] == "start")
    report = json.loads(subprocess.run(
        [sys.executable, "-m", "charlm", "eval", str(out), "--json"], check=True, capture_output=True,
        text=True, cwd=ROOT).stdout)
    steady = train_events[2:] or train_events  # the first intervals include warm-up
    return {
        "preset": config.name,
        "val_loss": report["loss"],
        "val_bpc": report["bpc"],
        "steps": end["step"],
        "train_time_s": round(end["time"], 1),
        "wall_s": round(wall, 1),
        "tokens_per_s": round(sum(e["tokens_per_s"] for e in steady) / len(steady)),
        "parameters": start["parameters"],
        "precision": start["precision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--set", action="append", default=[], help="extra --set for every run")
    args = parser.parse_args()
    if not args.text.is_file():
        sys.exit(f"error: {args.text} not found: pass --text FILE (tinyshakespeare: charlm corpus get tinyshakespeare)")
    extra = [item for value in args.set for item in ("--set", value)]
    results = []
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as tmp:
        for config in args.configs:
            results.append(run_preset(config, args.text, Path(tmp) / config.stem, extra))
            print(json.dumps(results[-1]), flush=True)
    machine = describe()
    print(f"\n{args.text.name} on {machine}, {time.strftime('%Y-%m-%d')}")
    print(f"{'preset':<32} {'val loss':>8} {'bpc':>6} {'steps':>7} {'train s':>8} {'tok/s':>8} {'params':>10}")
    for r in results:
        print(f"{r['preset']:<32} {r['val_loss']:>8.4f} {r['val_bpc']:>6.3f} {r['steps']:>7,} "
              f"{r['train_time_s']:>8.0f} {r['tokens_per_s']:>8,} {r['parameters']:>10,}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
