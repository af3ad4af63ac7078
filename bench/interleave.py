"""Training speed before against after, interleaved: two checkouts' `bench/run.py --only train`, in turns.

    python bench/interleave.py --before ../before [--rounds 2] [--quick] [--json OUT]

Each round runs the before checkout's `bench/run.py --only train` and then this one's, one at a time
with nothing else running, so drifts of the machine fall on both alike. The table gives, for every
cell, size and precision, each side's median `charlm train` tokens/s over the rounds and their
ratio; the bare kernel's tokens/s (the same code on both sides) shows how much the machine moved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402


def bench_train(checkout: Path, out: Path, quick: bool) -> list[dict]:
    command = [sys.executable, str(checkout / "bench" / "run.py"), "--only", "train", "--json", str(out)]
    subprocess.run(command + (["--quick"] if quick else []), check=True, cwd=checkout, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(checkout)})
    return [row for row in json.loads(out.read_text())["train"] if "skipped" not in row]


def table(rounds: dict[str, list[list[dict]]]) -> tuple[str, list[dict]]:
    def key(row: dict) -> tuple:
        return row["cell"], row["size"], row["precision"]

    lines = ["| cell | size | precision | bare kernel, before / after | `charlm train` before | after | after / before |",
             "|---|---|---|---|---|---|---|"]
    summary = []
    for first in rounds["before"][0]:
        pick = {side: [next(r for r in run if key(r) == key(first)) for run in runs] for side, runs in rounds.items()}
        median = {side: {name: statistics.median(r[name] for r in rows) for name in
                         ("bare_tokens_per_s", "charlm_tokens_per_s")} for side, rows in pick.items()}
        ratio = median["after"]["charlm_tokens_per_s"] / median["before"]["charlm_tokens_per_s"]
        summary.append({"cell": first["cell"], "size": first["size"], "precision": first["precision"],
                        "before": median["before"], "after": median["after"], "ratio": round(ratio, 3)})
        lines.append(f"| {first['cell']} | {first['size']} | {first['precision']} |"
                     f" {median['before']['bare_tokens_per_s']:,.0f} / {median['after']['bare_tokens_per_s']:,.0f} |"
                     f" {median['before']['charlm_tokens_per_s']:,.0f} | {median['after']['charlm_tokens_per_s']:,.0f} |"
                     f" {ratio:.3f} |")
    return "\n".join(lines), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="bench/run.py --quick: fewer cells and steps")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": ROOT}
    rounds: dict[str, list[list[dict]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="charlm-interleave-") as tmp:
        for number in range(args.rounds):
            for side, checkout in checkouts.items():
                print(f"round {number + 1}: {side}", flush=True)
                rounds[side].append(bench_train(checkout, Path(tmp) / f"{side}-{number}.json", args.quick))
    shown, summary = table(rounds)
    machine = describe()
    print(f"\n`charlm train` tokens/s, medians of {args.rounds} interleaved rounds, {machine}\n\n{shown}")
    if args.json:
        args.json.write_text(json.dumps({"machine": f"{machine}, {time.strftime('%Y-%m-%d')}", "rounds": args.rounds,
                                         "rows": summary,
                                         "command": " ".join(["python", *sys.argv])}, indent=1) + "\n")


if __name__ == "__main__":
    main()
