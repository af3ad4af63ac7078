"""The measurements behind model.size auto: run the sweeps in configs/sweeps/auto/ and tabulate them.

    python bench/auto_measure.py [--only NAME,...] [--out-dir sweeps/auto] [--collect]
    make auto-measure          # every sweep (hours on a 2-core CPU), then docs/auto.md

Each sweep is an ordinary `charlm sweep` (one trial at a time: most are equal-time comparisons, so
speed is part of the answer) into OUT_DIR/NAME. ``--collect`` only rewrites docs/auto.md from the
results already there. The table lists every trial, best first, with the sweep file's own comment
saying what it asked and the day and machine it ran on; a sweep with no results here (``--only``
ran others, or it ran on another machine) keeps its section as it was.
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
    from machine import describe

    for name in names:
        print(f"[{name}]", flush=True)
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        (out_dir / name / "machine.txt").write_text(f"{time.strftime('%Y-%m-%d')}, {describe()}\n")
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


def table(name: str, out_dir: Path) -> list[str] | None:
    """The section of one sweep from its results, or None where it has none in ``out_dir``."""
    results = out_dir / name / "results.csv"
    if not results.exists():
        return None
    with open(results) as handle:
        rows = list(csv.DictReader(handle))
    keys = [k for k in rows[0] if k not in ("trial", "best_val_loss", "steps", "seconds", "parameters", "state",
                                            "directory")]
    where = out_dir / name / "machine.txt"
    ran = where.read_text().strip() if where.exists() else "machine not recorded"
    lines = [f"### {name}", "", question(SWEEPS / f"{name}.yaml"), "", f"Ran {ran}.", "",
             "| " + " | ".join([*keys, "val loss", "steps", "parameters"]) + " |",
             "|" + "---|" * (len(keys) + 3)]
    for r in rows:
        loss = f"{float(r['best_val_loss']):.4f}" if r["best_val_loss"] else r["state"]
        params = f"{int(r['parameters']) / 1e6:.2f}M" if r["parameters"] else "-"
        lines.append("| " + " | ".join([*(r[k] for k in keys), loss, r["steps"] or "-", params]) + " |")
    return [*lines, ""]


BEGIN, END = "<!-- measurements: written by bench/auto_measure.py -->", "<!-- end of measurements -->"
HEADER = ("Val loss in nats/char on each text's last 10 %, the best evaluation of each trial as `charlm sweep` reports"
          " it; each sweep names the day and machine it ran on.")


def sections(block: str) -> dict[str, list[str]]:
    """The sweeps' sections already in docs/auto.md, by name."""
    found: dict[str, list[str]] = {}
    for part in block.split("\n### ")[1:]:
        name, _, body = part.partition("\n")
        found[name.strip()] = [f"### {name.strip()}", *body.rstrip("\n").splitlines(), ""]
    return found


def collect(out_dir: Path) -> None:
    """Rewrite the measurements part of docs/auto.md (between its markers): every sweep file's section, from
    its results in ``out_dir`` where it has them, else as it was (a sweep run on another day or machine)."""
    target = ROOT / "docs" / "auto.md"
    text = target.read_text() if target.exists() else f"# model.size auto\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    old, _, tail = rest.partition(END)
    kept = sections(old)
    lines = [BEGIN, "", HEADER, ""]
    for name in sweep_names():
        lines += table(name, out_dir) or kept.get(name) or [f"### {name}", "", "(not run yet)", ""]
    target.write_text(head + "\n".join(lines) + END + tail)
    print(f"wrote {target}")


def sweep_names() -> list[str]:
    names = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
    if not names:
        sys.exit(f"error: no sweep files in {SWEEPS}: restore them from git (git checkout -- configs/sweeps/auto)")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated sweep names (default: all in configs/sweeps/auto)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "sweeps" / "auto")
    parser.add_argument("--collect", action="store_true", help="only write docs/auto.md from results already there")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else sweep_names()
    unknown = [n for n in names if not (SWEEPS / f"{n}.yaml").exists()]
    if unknown:
        sys.exit(f"error: no sweep {', '.join(unknown)} in {SWEEPS}: choose from {', '.join(sweep_names())}")
    if not args.collect:
        run(names, args.out_dir)
    collect(args.out_dir)


if __name__ == "__main__":
    main()
