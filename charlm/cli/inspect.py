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
    from charlm.data import check_text_file
    from charlm.fsutil import atomic_write_text
    from charlm.inspection.gradients import gradient_curve, plot_curves, summary_line
    from charlm.inspection.sources import is_model_source, load_subjects

    models = [s for s in sources if is_model_source(s)]
    texts = [s for s in sources if not is_model_source(s)]
    if len(texts) > 1:
        raise CharlmError(f"give at most one text FILE (got {', '.join(map(str, texts))}); models are run"
                          " directories, .pt checkpoints or .yaml configs")
    for path in models:
        if not path.exists():
            raise CharlmError(f"{path} does not exist: give a run directory, a checkpoint or a config file")
    text = check_text_file(texts[0]) if texts else None
    if max_distance < 1 or positions < 1 or burn_in < 0:
        raise CharlmError("--max-distance and --positions must be at least 1 and --burn-in at least 0")
    subjects = load_subjects(models, text, comma_list(cells, "--cells"), seed, device)
    curves = []
    for subject in subjects:
        curve = gradient_curve(subject.model, subject.tokens, subject.label, max_distance, positions, burn_in,
                               seed=seed, progress=not as_json)
        curves.append(curve)
        if not as_json:
            click.echo(summary_line(curve))
    make_dir(out)
    report = {"text": str(text) if text else "each model's own val split", "max_distance": max_distance,
              "positions": positions, "burn_in": burn_in, "seed": seed, "curves": [c.as_dict() for c in curves]}
    atomic_write_text(out / "gradients.json", json.dumps(report, indent=1) + "\n")
    plot_curves(curves, out / "gradients.png", text.name if text else "each model's val split")
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"wrote {out / 'gradients.png'} and {out / 'gradients.json'}", err=True)


@inspect_group.command(name="memory", short_help="The long-range memory task: accuracy by cell type and gap.")
@click.option("--cells", default="rnn_tanh,gru,lstm", show_default=True, help="Cell types to compare.")
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
    from charlm.config import CELLS
    from charlm.fsutil import atomic_write_text
    from charlm.inspection.memory import plot_results, results_table, run_all

    cell_list = comma_list(cells, "--cells")
    for cell in cell_list:
        if cell not in CELLS:
            raise CharlmError(f"unknown cell {cell!r} in --cells: choose from {', '.join(CELLS)}")
    gap_list = comma_list(gaps, "--gaps", int)
    if not cell_list or not gap_list or min(gap_list) < 2 or steps < 1 or hidden_size < 1 or workers < 0:
        raise CharlmError("--cells and --gaps need at least one entry each, gaps start at 2, and --steps and"
                          " --hidden-size must be at least 1")
    jobs = [(cell, gap) for cell in cell_list for gap in gap_list]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results = run_all(jobs, steps, hidden_size, seed, workers, progress=not as_json)
    make_dir(out)
    report = {"steps": steps, "hidden_size": hidden_size, "seed": seed, "results": [r.as_dict() for r in results]}
    atomic_write_text(out / "memory.json", json.dumps(report, indent=1) + "\n")
    plot_results(results, out / "memory.png")
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
    import numpy as np

    import charlm
    from charlm.data import check_text_file, read_text
    from charlm.fsutil import atomic_write_text
    from charlm.inspection.text import feature_values, rank_units, render_html, trace

    if out is None and feature is None:
        raise CharlmError("nothing to do: give -o page.html for the page, or --find-units PATTERN (or both)")
    if max_chars < 1 or top < 1:
        raise CharlmError("--max-chars and --top must be at least 1")
    model = charlm.load(checkpoint)
    text = read_text(check_text_file(file), encoding)[:max_chars]
    if not text:
        raise CharlmError(f"{file} is empty: give a text to read")
    layers, hidden = model.model.num_layers, model.model.hidden_size
    layer = layers - 1 if layer is None else layer
    if not 0 <= layer < layers:
        raise CharlmError(f"--layer {layer} is out of range: this model has layers 0 to {layers - 1}")
    if unit is not None and not 0 <= unit < hidden:
        raise CharlmError(f"--cell {unit} is out of range: layer {layer} has units 0 to {hidden - 1}")
    result = trace(model.model, model.vocab, text, state_name)
    chosen = (layer, unit) if unit is not None else None
    if feature is not None:
        values, description = feature_values(text, feature)
        ranking = rank_units(result, values, top)
        binary = set(np.unique(values)) <= {0.0, 1.0}
        extent = f"{int(values.sum()):,} of {len(text):,} characters" if binary else f"{len(text):,} characters"
        click.echo(f"units tracking {description} ({extent}), by correlation of {state_name} with it:")
        click.echo(f"{'rank':>4}  {'layer':>5}  {'unit':>5}  correlation")
        for rank, score in enumerate(ranking, 1):
            click.echo(f"{rank:>4}  {score.layer:>5}  {score.unit:>5}  {score.correlation:+.3f}")
        if chosen is None and out is not None:  # the page shows the best unit found
            chosen = (ranking[0].layer, ranking[0].unit)
    if out is not None:
        what = f"unit {chosen[1]} of layer {chosen[0]}" if chosen else "surprisal"
        page = render_html(result, f"{file.name} read by {model.path.parent.name}/{model.path.name}: {what}", chosen)
        atomic_write_text(out, page)
        known = result.known
        click.echo(f"wrote {out} ({len(text):,} characters; mean surprisal"
                   f" {result.surprisal[known].mean():.3f} nats/char)", err=True)
