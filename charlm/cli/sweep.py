"""``charlm sweep``."""

from __future__ import annotations

from pathlib import Path

import click

from charlm.errors import CharlmError


@click.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Sweep directory [default: sweeps/<name>].")
@click.option("--workers", type=int,
              help="Trials run at once, as separate processes sharing the CPU threads [default: the sweep"
                   " file's workers, else 1].")
@click.option("--storage", help="Database URL shared by the workers of one study, on one machine or many, e.g."
                                " postgresql://user:password@host/db [default: sqlite in -o].")
@click.option("--dry-run", is_flag=True, help="Print the trials (grid) or the search space and exit.")
@click.option("--report", "report_only", is_flag=True, help="Print the results table of the sweep so far and exit.")
def sweep(sweep_file: Path, out: Path | None, workers: int | None, storage: str | None, dry_run: bool,
          report_only: bool) -> None:
    """Run a hyperparameter sweep described by SWEEP_FILE (YAML) on Optuna.

    Re-running the same command resumes the sweep: finished trials are kept, interrupted ones run
    again. Each trial is an ordinary run directory (charlm sample/eval work on it).
    """
    from charlm.sweep import describe, load_sweep, report, results_table, run_sweep

    if workers is not None and workers < 1:
        raise CharlmError(f"--workers must be >= 1, got {workers}")
    spec = load_sweep(sweep_file)
    if dry_run:
        click.echo(describe(spec))
        return
    out = out or Path("sweeps") / spec.name
    if report_only:
        if storage is None and not (out / "study.db").exists():
            raise CharlmError(f"no sweep in {out}: run `charlm sweep {sweep_file}` first, or give -o DIR")
        rows = report(spec, out, storage, echo=lambda line: click.echo(line, err=True))
    else:
        rows = run_sweep(spec, out, workers or spec.workers, storage, echo=lambda line: click.echo(line, err=True))
    click.echo(results_table(rows, spec, out))
    best = next((r for r in rows if r.state == "COMPLETE"), None)
    if best is not None:
        click.echo(f"best: trial {best.number}, val loss {best.value:.4f} -> charlm sample {best.directory}", err=True)
    if (out / "results.csv").exists():
        click.echo(f"results: {out / 'results.csv'}; TensorBoard: tensorboard --logdir {out}", err=True)
