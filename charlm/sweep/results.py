"""A sweep's results: the table printed at the end and by --report, results.csv, and the ``best`` link."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlm.config import format_duration
from charlm.fsutil import atomic_write_text
from charlm.sweep.spec import format_value

if TYPE_CHECKING:
    from charlm.sweep.spec import SweepSpec


@dataclass
class TrialRow:
    number: int
    params: dict[str, Any]
    value: float | None  # the best val loss
    steps: int | None
    seconds: float | None
    parameters: int | None  # the model's size
    state: str  # COMPLETE, RUNNING, PRUNED, FAIL or INTERRUPTED
    directory: str
    error: str | None = None
    host: str = ""  # the machine that ran it

    def outcome(self) -> str:
        """One line on how the trial ended, for the scheduler's log."""
        detail = {"COMPLETE": f"best val loss {self.value:.4f}" if self.value is not None else "done",
                  "PRUNED": f"pruned at step {self.steps}",
                  "FAIL": f"failed: {self.error or 'see train.log'}"}.get(self.state, self.state)
        return detail + (f" ({format_duration(self.seconds)})" if self.seconds else "")


def results_table(rows: list[TrialRow], spec: SweepSpec, out_dir: Path | None = None) -> str:
    """The table, best first; a trial directory inside ``out_dir`` by its name, any other in full."""
    keys = [p.key for p in spec.parameters]
    header = ["trial", *keys, "best val loss", "steps", "time", "params", "state", "host", "directory"]
    lines = [header]
    for r in rows:
        lines.append([str(r.number), *(format_value(r.params.get(k, "")) for k in keys),
                      f"{r.value:.4f}" if r.value is not None else "-", f"{r.steps:,}" if r.steps else "-",
                      format_duration(r.seconds) if r.seconds else "-",
                      f"{r.parameters / 1e6:.2f}M" if r.parameters else "-", r.state.lower(), r.host or "-",
                      _short(r.directory, out_dir) if r.directory else "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _short(directory: str, out_dir: Path | None) -> str:
    inside = out_dir is not None and Path(directory).parent == out_dir.resolve()
    return Path(directory).name if inside else directory


def write_results(rows: list[TrialRow], spec: SweepSpec, out_dir: Path) -> None:
    """results.csv, and `best` (a link to the best trial's run directory, or a file naming it)."""
    buffer = io.StringIO()
    keys = [p.key for p in spec.parameters]
    writer = csv.writer(buffer)
    writer.writerow(["trial", *keys, "best_val_loss", "steps", "seconds", "parameters", "state", "host", "directory"])
    for r in rows:
        writer.writerow([r.number, *(r.params.get(k, "") for k in keys), r.value if r.value is not None else "",
                         r.steps or "", r.seconds or "", r.parameters or "", r.state.lower(), r.host, r.directory])
    atomic_write_text(out_dir / "results.csv", buffer.getvalue())
    best = next((r for r in rows if r.state == "COMPLETE" and r.value is not None), None)
    if best is None or not best.directory:
        return
    target = Path(best.directory)
    if not target.exists():  # run by another machine: name it
        if (out_dir / "best").is_symlink():
            (out_dir / "best").unlink()
        atomic_write_text(out_dir / "best.txt", f"{best.host}:{target}\n")
        return
    link = out_dir / "best"
    temporary = out_dir / ".best.tmp"
    try:
        temporary.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, out_dir), temporary)
        os.replace(temporary, link)
    except OSError:  # no symlinks here (some Windows setups): a file that names it instead
        atomic_write_text(out_dir / "best.txt", str(target) + "\n")
