"""charlm against a plain script, side by side: the same machine, text, split and wall-clock budget.

    python bench/versus.py [--texts tinyshakespeare,shakespeare,python,python:400k] [--budgets 60s,10m] [--threads 2,1]
                           [--arm "lstm=--cell lstm" ...] [--loop-rounds 3] [--device cpu|cuda] [--json OUT]
    make versus     # the tables of docs/performance.md (part of make bench)

For every text, budget and thread count, one after the other with nothing else running:
``bench/baseline.py`` (a 2x256 LSTM for budgets under 5 minutes; from 5 minutes on 2x512, dropout 0.2,
windows of 100: the plain script of the issue that set the targets), then ``charlm train TEXT
--max-time B`` with nothing else given (model.size auto: it measures this machine and chooses), then
``charlm eval`` of charlm's final weights (last.pt, as the script reports its final weights). Both
read the same split (the first 90 % trains, the last 10 % is val) and are evaluated in fp32.

``--arm NAME=FLAGS`` (repeatable): in every comparison, also ``charlm train`` with those flags added (auto
chooses the rest), right after charlm auto: e.g. the cell fixed to the LSTM, or a block to try.
``--script-arm NAME=FLAGS`` (repeatable): also the plain script with those flags, e.g. the dropout a user
would give it on a small text.

``--loop-rounds``: `charlm train` fixed at the script's exact shape and precision against the script,
tokens/s, alternating; the cost of charlm's loop (NaN checks, logging, resumable state) over a plain one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402


def text_path(name: str) -> Path:
    """A corpus by name, or ``NAME:300k``: its first 300,000 characters (a small text), written once beside
    the corpus cache; the slice's last 10 % is its val split, as for any text."""
    from charlm.corpora import get_corpus

    name, _, size = name.partition(":")
    path = get_corpus(name, quiet=True)
    if not size:
        return path
    chars = int(float(size.lower().removesuffix("k")) * (1000 if size.lower().endswith("k") else 1))
    small = Path(tempfile.gettempdir()) / "charlm-small-texts" / f"{path.stem}-{chars}.txt"
    if not small.exists():
        small.parent.mkdir(parents=True, exist_ok=True)
        part = small.with_suffix(".part")
        part.write_text(path.read_text(encoding="utf-8")[:chars], encoding="utf-8")
        part.replace(small)
    return small


def seconds_of(budget: str) -> float:
    from charlm.config import parse_duration

    return parse_duration(budget)


def baseline_args(seconds: float) -> list[str]:
    return [] if seconds < 300 else ["--hidden", "512", "--dropout", "0.2", "--seq-len", "100"]


def run_baseline(text: Path, seconds: float, threads: int, device: str, extra: list[str] = ()) -> dict:
    command = [sys.executable, str(ROOT / "bench" / "baseline.py"), str(text), "--max-time", str(seconds),
               "--threads", str(threads), "--device", device, *baseline_args(seconds), *extra]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def run_charlm(text: Path, seconds: float, threads: int, device: str, out: Path, extra: list[str] = ()) -> dict:
    command = [sys.executable, "-m", "charlm", "train", str(text), "--max-time", f"{seconds}s", "--threads",
               str(threads), "--device", device, "-o", str(out), "--no-progress", "--no-sample", *extra]
    trained = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if trained.returncode != 0:
        raise RuntimeError(f"charlm train failed:\n{trained.stderr[-2000:]}")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    end, start = events[-1], events[0]
    windows = [e for e in events if e["event"] == "train"]
    first, last = windows[0], windows[-1]  # the steps alone: no probe, evaluation or checkpoint in between
    probe = next((e for e in events if e["event"] == "probe"), None)
    evaluation = json.loads(subprocess.run([sys.executable, "-m", "charlm", "eval", str(out / "last.pt"), "--json"],
                                           check=True, capture_output=True, text=True, cwd=ROOT).stdout)
    chosen = next((line.removeprefix("auto: ") for line in trained.stderr.splitlines() if line.startswith("auto: ")),
                  "")
    return {"val_loss": evaluation["loss"], "steps": end["step"], "tokens": end["tokens"],
            "tokens_per_s": round(end["tokens"] / max(end["time"], 1e-9)),
            "train_tokens_per_s": round((last["tokens"] - first["tokens"]) / max(last["time"] - first["time"], 1e-9)),
            "precision": start["precision"],
            "parameters": start["parameters"], "probe_s": probe["seconds"] if probe else 0.0, "auto": chosen}


def compare(texts: list[str], budgets: list[str], threads: list[int], device: str, work: Path,
            arms: dict[str, list[str]], script_arms: dict[str, list[str]] | None = None) -> list[dict]:
    rows = []
    for text_name in texts:
        text = text_path(text_name)
        for budget in budgets:
            seconds = seconds_of(budget)
            for count in threads:
                plain = run_baseline(text, seconds, count, device)
                scripts = {name: run_baseline(text, seconds, count, device, flags)
                           for name, flags in (script_arms or {}).items()}
                ours = run_charlm(text, seconds, count, device, work / f"{text_name}-{budget}-{count}")
                row = {"text": text_name, "budget": budget, "threads": count, "baseline": plain, "charlm": ours,
                       "difference": ours["val_loss"] - plain["val_loss"], "arms": {}, "script_arms": scripts}
                print(f"  {text_name:<16} {budget:>4} {count} thr  baseline {plain['val_loss']:.4f}"
                      f" ({plain['shape']})  charlm {ours['val_loss']:.4f} ({ours['auto']})"
                      f"  difference {row['difference']:+.4f}", flush=True)
                for name, script in scripts.items():
                    print(f"    script {name} ({script['shape']}): {script['val_loss']:.4f};"
                          f" charlm minus it {ours['val_loss'] - script['val_loss']:+.4f}", flush=True)
                for name, flags in arms.items():
                    arm = run_charlm(text, seconds, count, device, work / f"{text_name}-{budget}-{count}-{name}", flags)
                    row["arms"][name] = arm
                    print(f"    charlm {name} ({' '.join(flags)}): {arm['val_loss']:.4f} ({arm['auto']});"
                          f" auto minus it {ours['val_loss'] - arm['val_loss']:+.4f}", flush=True)
                rows.append(row)
    return rows


def loop_cost(text_name: str, rounds: int, threads: int, device: str, work: Path) -> dict:
    """charlm's loop at the script's exact shape against the script: tokens/s of the training steps over
    30 s, alternating, both after their first 25 steps (charlm's from its logged windows, so its final
    evaluation and checkpoint, which the script does not have, are left out)."""
    text = text_path(text_name)
    plain = run_baseline(text, 30, threads, device)
    same = ["--set", "model.size=fixed", "--cell", "lstm", "--hidden-size", "256", "--num-layers", "2",
            "--lr", "0.002", "--precision", plain["precision"], "--set", "train.eval_interval=1000000",
            "--set", "train.sample_length=0", "--set", "train.max_epochs=null"]
    ratios, pairs = [], []
    for number in range(rounds):
        ours = run_charlm(text, 30, threads, device, work / f"loop-{number}", same)
        base = run_baseline(text, 30, threads, device) if number else plain
        ratios.append(ours["train_tokens_per_s"] / base["steady_tokens_per_s"])
        pairs.append((base["steady_tokens_per_s"], ours["train_tokens_per_s"]))
        print(f"  loop round {number + 1}: script {base['steady_tokens_per_s']:,} tok/s,"
              f" charlm {ours['train_tokens_per_s']:,}"
              f" tok/s, ratio {ratios[-1]:.3f}", flush=True)
    return {"text": text_name, "threads": threads, "shape": plain["shape"], "precision": plain["precision"],
            "pairs": pairs, "ratios": [round(r, 3) for r in ratios], "median_ratio": round(statistics.median(ratios), 3)}


def print_table(rows: list[dict], loop: dict | None, header: str) -> None:
    print(f"\n{header}")
    print(f"{'text':<16}{'budget':>7}{'threads':>8}  {'plain script':>12}  {'charlm auto':>11}  {'difference':>10}"
          "  charlm chose")
    for r in rows:
        print(f"{r['text']:<16}{r['budget']:>7}{r['threads']:>8}  {r['baseline']['val_loss']:>12.4f}"
              f"  {r['charlm']['val_loss']:>11.4f}  {r['difference']:>+10.4f}  {r['charlm']['auto']}")
        for name, script in r.get("script_arms", {}).items():
            print(f"{'':<31}  script {name:<15} {script['val_loss']:.4f}  charlm minus it"
                  f" {r['charlm']['val_loss'] - script['val_loss']:+.4f}  {script['shape']}")
        for name, arm in r.get("arms", {}).items():
            print(f"{'':<31}  charlm {name:<15} {arm['val_loss']:.4f}  auto minus it"
                  f" {r['charlm']['val_loss'] - arm['val_loss']:+.4f}  {arm['auto']}")
    if loop:
        print(f"\nloop: charlm at the script's shape ({loop['shape']}, {loop['precision']}) runs at"
              f" {loop['median_ratio']:.2f}x the script's tokens/s (median of {len(loop['ratios'])} alternating"
              f" 30 s runs: {', '.join(f'{r:.3f}' for r in loop['ratios'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", default="tinyshakespeare,shakespeare,python")
    parser.add_argument("--budgets", default="60s")
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--also", action="append", default=[], metavar="TEXT:BUDGET:THREADS",
                        help="one more comparison, e.g. tinyshakespeare:10m:2 (repeatable)")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME=FLAGS",
                        help='one more charlm run per comparison, e.g. "lstm=--cell lstm" (repeatable)')
    parser.add_argument("--script-arm", action="append", default=[], metavar="NAME=FLAGS",
                        help='one more run of the plain script per comparison, e.g. "dropout=--dropout 0.25"')
    parser.add_argument("--loop-rounds", type=int, default=3, help="0: skip the loop-cost part")
    parser.add_argument("--device", default="cpu", help="where both train: cpu, cuda, ...")
    parser.add_argument("--json", type=Path, help="where to write the results [bench/results/versus-DATE.json]")
    args = parser.parse_args()
    header = f"charlm vs a plain script, val loss (nats/char), {describe(args.device)}, {time.strftime('%Y-%m-%d')}"
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="charlm-versus-") as tmp:
        work = Path(tmp)
        texts = [t for t in args.texts.split(",") if t]  # --texts "": only --also and the loop cost
        arms = {name: flags.split() for name, _, flags in (arm.partition("=") for arm in args.arm)}
        script_arms = {name: flags.split() for name, _, flags in (arm.partition("=") for arm in args.script_arm)}
        rows = compare(texts, args.budgets.split(","), [int(t) for t in args.threads.split(",")], args.device, work,
                       arms, script_arms)
        for extra in args.also:
            name, _, rest = extra.rpartition(":")  # the text may hold a colon itself: python:400k:60s:2
            name, budget = name.rsplit(":", 1)
            rows += compare([name], [budget], [int(rest)], args.device, work, arms, script_arms)
        loop = loop_cost("tinyshakespeare", args.loop_rounds, 2, args.device, work) if args.loop_rounds else None
    print_table(rows, loop, header)
    out = args.json or ROOT / "bench" / "results" / f"versus-{time.strftime('%Y%m%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": header, "rows": rows, "loop": loop,
                               "command": shlex.join(["python", *sys.argv])}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
