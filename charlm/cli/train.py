"""``charlm train``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from charlm.cli.options import config_shortcuts
from charlm.errors import CharlmError

if TYPE_CHECKING:
    from charlm.config import SampleConfig


@click.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path), help="YAML config file.")
@click.option("--corpus", help="Train on a named corpus (see `charlm corpus list`) instead of PATH.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Run directory [default: runs/<name>-<time>].")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set train.lr=1e-3 (repeatable).")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue the run in this directory from its newest checkpoint.")
@click.option("--init-from", type=click.Path(path_type=Path), help="Start from a checkpoint's weights (fine-tuning).")
@click.option("--extend-vocab", is_flag=True, help="With --init-from: add the text's new characters to the vocabulary.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="With folders: only files matching this glob, e.g. '*.py' (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="With folders: leave out files matching this glob, e.g. 'tests/**' (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bar (evaluations are still printed).")
@click.option("--no-sample", is_flag=True, help="Do not print a sample at the end.")
@config_shortcuts
def train(paths: tuple[str, ...], config_file: Path | None, corpus: str | None, out: Path | None,
          assignments: tuple[str, ...], resume_dir: Path | None, init_from: Path | None, extend_vocab: bool,
          include: tuple[str, ...], exclude: tuple[str, ...], no_progress: bool, no_sample: bool,
          shortcuts: list[tuple[str, Any]]) -> None:
    """Train a model on PATH (a UTF-8 text file; or several files, folders and globs, one document
    per file) or on --corpus NAME."""
    from charlm.config import parse_set
    from charlm.train import distributed, plan, run

    if paths and corpus is not None:
        raise CharlmError(f"give PATH or --corpus {corpus}, not both: drop one")
    overrides = [*shortcuts, *(parse_set(a) for a in assignments)]
    if paths:
        overrides += [("data.path", paths[0] if len(paths) == 1 else list(paths)), ("data.corpus", None)]
    if corpus is not None:
        overrides += [("data.corpus", corpus), ("data.path", None)]
    if include:
        overrides.append(("data.include", list(include)))
    if exclude:
        overrides.append(("data.exclude", list(exclude)))
    ranks = distributed.from_environment()
    request = plan(config_file, overrides, out, resume_dir, init_from, extend_vocab, progress=not no_progress,
                   check_lock=ranks.is_main)
    result = run(request)
    code = 130 if result.stop_reason == "interrupted" else 0
    if ranks.is_main:  # under torchrun, rank 0 speaks for the run
        best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
        click.echo(f"stopped ({result.stop_reason}) at step {result.step:,} after {result.train_time:.0f}s;"
                   f" best val loss {best}; run in {request.out_dir}", err=True)
        if code:
            click.echo(f"resume with: charlm train --resume {request.out_dir}", err=True)
        elif not no_sample:
            _print_sample(request.out_dir, request.config.sample)
    distributed.leave_worker(code)
    if code:
        sys.exit(code)


def _print_sample(run_dir: Path, settings: SampleConfig) -> None:
    """The end-of-training sample: the run's best model, drawn with the run's sample settings."""
    import charlm

    model = charlm.load(run_dir)
    click.echo(f"--- sample from {model.path} ---", err=True)
    click.echo(model.preview(settings, settings.length, settings.seed, lines=10))
