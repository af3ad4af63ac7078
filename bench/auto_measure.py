"""The measurements behind model.size auto: run the sweeps in configs/sweeps/auto/ and tabulate them.

    python bench/auto_measure.py [--only NAME,...] [--out-dir sweeps/auto] [--collect]
    make auto-measure          # every sweep (hours on a 2-core CPU), then docs/auto.md

Each sweep is an ordinary `charlm sweep` (one trial at a time: most are equal-time comparisons, so
speed is part of the answer) into OUT_DIR/NAME. ``--collect`` only rewrites docs/auto.md from the
results already there. The table lists every trial, best first, with the sweep file's own comment
saying what it asked.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "configs" / "sweeps" / "auto"
sys.path.insert(0, str(ROOT / "bench"))


def run(names: list[str], out_dir: Path) -> None:
    for name in names:
        print(f"[{name}]", flush=True)
        subprocess.run([sys.executable, "-m", "charlm", "sweep", str(SWEEPS / f"{name}.yaml"), "-o", str(out_dir / name)],
                       check=True, cwd=ROOT)


def question(path: Path) -> str:
    """The sweep file's leading comment."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def table(name: str, out_dir: Path) -> list[str]:
    results = out_dir / name / "results.csv"
    if not results.exists():
        return [f"### {name}", "", "(not run yet)", ""]
    with open(results) as handle:
        rows = list(csv.DictReader(handle))
    keys = [k for k in rows[0] if k not in ("trial", "best_val_loss", "steps", "seconds", "parameters", "state",
                                            "directory")]
    lines = [f"### {name}", "", question(SWEEPS / f"{name}.yaml"), "",
             "| " + " | ".join([*keys, "val loss", "steps", "parameters"]) + " |",
             "|" + "---|" * (len(keys) + 3)]
    for r in rows:
        loss = f"{float(r['best_val_loss']):.4f}" if r["best_val_loss"] else r["state"]
        params = f"{int(r['parameters']) / 1e6:.2f}M" if r["parameters"] else "-"
        lines.append("| " + " | ".join([*(r[k] for k in keys), loss, r["steps"] or "-", params]) + " |")
    return [*lines, ""]


BEGIN, END = "<!-- measurements: written by bench/auto_measure.py -->", "<!-- end of measurements -->"


def collect(out_dir: Path, names: list[str]) -> None:
    """Rewrite the measurements part of docs/auto.md (between its markers); the text around stays."""
    from machine import describe

    lines = [BEGIN, "", f"{time.strftime('%Y-%m-%d')}, {describe()}; val loss in nats/char on each text's last"
             " 10 %, the best evaluation of each trial as `charlm sweep` reports it.", ""]
    for name in names:
        lines += table(name, out_dir)
    target = ROOT / "docs" / "auto.md"
    text = target.read_text() if target.exists() else f"# model.size auto\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    target.write_text(head + "\n".join(lines) + END + tail)
    print(f"wrote {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated sweep names (default: all in configs/sweeps/auto)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "sweeps" / "auto")
    parser.add_argument("--collect", action="store_true", help="only write docs/auto.md from results already there")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else sorted(p.stem for p in SWEEPS.glob("*.yaml"))
    if not args.collect:
        run(names, args.out_dir)
    collect(args.out_dir, names)


if __name__ == "__main__":
    main()
