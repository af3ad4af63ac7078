"""``charlm inspect gradients|memory|text``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from charlm.cli.options import comma_list, make_dir
from charlm.errors import CharlmError


@click.group(name="inspect")
def inspect_group() -> None:
    """Look inside models: vanishing gradients, long-range memory, surprisal and hidden units."""


@inspect_group.command(name="gradients", short_help="Gradient norm by distance k back: vanishing gradients (PNG + JSON).")
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--cells", help="With configs (or none): one fresh model per cell, e.g. rnn_tanh,gru,lstm.")
@click.option("--max-distance", "max_distance", type=int, default=200, show_default=True,
              help="K: measure ‖∂L_t/∂x_(t−k)‖ for k = 1…K.")
@click.option("--positions", type=int, default=256, show_default=True, help="Text positions averaged over.")
@click.option("--burn-in", type=int, default=100, show_default=True,
              help="Characters read before each measured window, so the state is a mid-text one.")
@click.option("--seed", type=int, default=0, show_default=True, help="Positions and fresh models' weights.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("inspect"), show_default=True,
              help="Folder for gradients.png and gradients.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the curves as one JSON object.")
@click.option("--device", default="cpu", show_default=True)
def inspect_gradients(sources: tuple[Path, ...], cells: str | None, max_distance: int, positions: int, burn_in: int,
                      seed: int, out: Path, as_json: bool, device: str) -> None:
    """How strongly the loss depends on the input k steps back, for checkpoints or fresh models.

    \b
    SOURCES are run directories, checkpoints (.pt) or configs (.yaml: a freshly initialised
    model), and at most one text FILE to measure on (default: each model's own val split).
    \b
      charlm inspect gradients runs/shakespeare
      charlm inspect gradients --cells rnn_tanh,gru,lstm ../shared/corpora/tinyshakespeare.txt
    """
    from charlm.inspection.gradients import measure, summary_line

    report = measure(list(sources), comma_list(cells, "--cells"), max_distance, positions, burn_in, seed, device,
                     progress=not as_json, on_curve=None if as_json else lambda curve: click.echo(summary_line(curve)))
    report.save(make_dir(out))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"wrote {out / 'gradients.png'} and {out / 'gradients.json'}", err=True)


@inspect_group.command(name="memory", short_help="The long-range memory task: accuracy by cell type and gap.")
@click.option("--cells", default="rnn_tanh,gru,lstm,mingru,minlstm", show_default=True, help="Cell types to compare.")
@click.option("--gaps", default="5,20,50,100,200", show_default=True,
              help="Characters between the key and the answer.")
@click.option("--steps", type=int, default=800, show_default=True, help="Training steps per cell and gap (at most).")
@click.option("--hidden-size", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, help="Models trained at once, one thread each [default: one per core].")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("inspect"), show_default=True,
              help="Folder for memory.png and memory.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def inspect_memory(cells: str, gaps: str, steps: int, hidden_size: int, seed: int, workers: int, out: Path,
                   as_json: bool) -> None:
    """Can each cell type carry one character across a gap? A small synthetic task, trained briefly.

    Each line is a key (A or B), filler words, a cue '=' and the answer (x or y) exactly GAP
    characters after the key. Accuracy is scored at the answer on fresh lines; chance is 50%.
    """
    from charlm.inspection.memory import memory_jobs, results_table, run_all, save_report

    jobs = memory_jobs(comma_list(cells, "--cells"), comma_list(gaps, "--gaps", int), steps, hidden_size)
    if workers < 0:
        raise CharlmError(f"--workers must be >= 0 (0: one per core), got {workers}")
    results = run_all(jobs, steps, hidden_size, seed, workers or min(len(jobs), os.cpu_count() or 1),
                      progress=not as_json)
    report = save_report(results, make_dir(out), steps, hidden_size, seed)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo("accuracy at the decision point (chance: 50%)")
    click.echo(results_table(results))
    click.echo(f"wrote {out / 'memory.png'} and {out / 'memory.json'}", err=True)


@inspect_group.command(name="text", short_help="A text coloured by surprisal or a hidden unit (HTML); --find-units.")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Write the HTML page here (e.g. page.html).")
@click.option("--cell", "unit", type=int, help="Colour by hidden unit N instead of surprisal.")
@click.option("--layer", type=int, help="Layer of --cell (0 is the first) [default: the last].")
@click.option("--state", "state_name", type=click.Choice(["h", "c"]), default="h", show_default=True,
              help="Hidden state h, or an LSTM's cell state c.")
@click.option("--find-units", "feature", metavar="PATTERN",
              help="Rank hidden units by how well they track a feature: a regular expression (inside a match) or"
                   " quotes, single-quotes, parens, brackets, line-position, capitals, line-start.")
@click.option("--top", type=int, default=10, show_default=True, help="How many units --find-units prints.")
@click.option("--max-chars", type=int, default=5000, show_default=True, help="Read at most this many characters.")
@click.option("--encoding", default="utf-8", show_default=True)
def inspect_text(checkpoint: Path, file: Path, out: Path | None, unit: int | None, layer: int | None, state_name: str,
                 feature: str | None, top: int, max_chars: int, encoding: str) -> None:
    """Surprisal of every character of FILE under CHECKPOINT, as an HTML page, and hidden units.

    \b
      charlm inspect text runs/shakespeare play.txt -o page.html
      charlm inspect text runs/shakespeare play.txt --cell 37 -o unit37.html
      charlm inspect text runs/shakespeare play.txt --find-units parens
    """
    import charlm
    from charlm.fsutil import atomic_write_text
    from charlm.inspection.text import choose_layer, find_units, read_prefix, render_html, trace

    if out is None and feature is None:
        raise CharlmError("nothing to do: give -o page.html for the page, or --find-units PATTERN (or both)")
    if max_chars < 1 or top < 1:
        raise CharlmError("--max-chars and --top must be at least 1")
    model = charlm.load(checkpoint)
    text = read_prefix(file, encoding, max_chars)
    layer = choose_layer(model.model, layer, unit)
    result = trace(model.model, model.vocab, model.kind, text, state_name)
    chosen = (layer, unit) if unit is not None else None
    if feature is not None:
        search = find_units(result, feature, top)
        click.echo(search.table(state_name))
        if chosen is None and out is not None:  # the page shows the best unit found
            chosen = (search.ranking[0].layer, search.ranking[0].unit)
    if out is not None:
        what = f"unit {chosen[1]} of layer {chosen[0]}" if chosen else "surprisal"
        atomic_write_text(out, render_html(result, f"{file.name} read by {model.path.parent.name}/{model.path.name}:"
                                                   f" {what}", chosen))
        click.echo(f"wrote {out} ({len(text):,} characters; mean surprisal"
                   f" {result.surprisal[result.known].mean():.3f} nats/char)", err=True)
