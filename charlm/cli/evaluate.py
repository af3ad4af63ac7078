"""``charlm eval`` and ``charlm info``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from charlm.config import SPLITS
from charlm.errors import CharlmError


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(SPLITS), default="val", show_default=True,
              help="Without FILE: which split of the checkpoint's own text.")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--device", default="cpu", show_default=True)
def eval_command(checkpoint: Path, file: Path | None, split: str, encoding: str, as_json: bool, device: str) -> None:
    """Loss, bits per character and perplexity of CHECKPOINT on FILE or on its own val split."""
    import charlm

    model = charlm.load(str(checkpoint), device=device)
    if file is not None:
        part, unknown = model.file_data(file, encoding, progress=not as_json)
        source = {"file": str(file), "unknown_chars": unknown}
    else:
        part = model.own_data(split, progress=not as_json)
        source = {"file": model.checkpoint.text.path, "split": split, "unknown_chars": 0}
        if part.predicted == 0:
            raise CharlmError(f"the run's {split} split is empty: pass a FILE or choose another --split")
    source.update(part.describe())
    result = model.evaluate_part(part)
    if as_json:
        click.echo(json.dumps({**result, **source, "checkpoint": str(model.path)}))
        return
    where = f"{source['file']}" + (f" ({source['split']} split)" if "split" in source else "")
    click.echo(f"{where}: loss {result['loss']:.4f} nats/char, {result['bpc']:.4f} bits/char,"
               f" perplexity {result['perplexity']:.3f}, {result['chars']:,} chars")
    if "loss_backward" in result:
        click.echo(f"backward direction: loss {result['loss_backward']:.4f} nats/char,"
                   f" {result['bpc_backward']:.4f} bits/char")
    if source["unknown_chars"]:
        click.echo(f"{source['unknown_chars']:,} characters outside the model's vocabulary were skipped", err=True)


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(checkpoint: Path, as_json: bool) -> None:
    """Config, vocabulary, size and progress of a checkpoint."""
    from charlm.model.cells import describe_shape
    from charlm.train.checkpoint import Checkpoint

    report = Checkpoint.load(checkpoint).summary()
    if as_json:
        click.echo(json.dumps(report))
        return
    m = report["config"]["model"]
    best = report["best_val_loss"]
    kind = "bidirectional (forward + backward stacks) " if report["bidirectional"] else ""
    lines = " (lines mode: the line marker and)" if report["mode"] == "lines" else ""
    both = " (mean of both directions)" if report["bidirectional"] else ""
    click.echo(f"checkpoint   {report['checkpoint']}")
    shape = describe_shape(m["num_layers"], m["hidden_size"], m["cell"], m["block"], m["ffn"], m["input_conv"])
    click.echo(f"model        {kind}{shape}, embedding {m['embedding_size'] or m['hidden_size']},"
               f" dropout {m['dropout']}, tied {m['tie_weights']}")
    click.echo(f"parameters   {report['parameters']:,}")
    click.echo(f"vocabulary   {report['vocab_size']} symbols{lines}: {report['vocab']!r}")
    click.echo(f"trained      {report['step']:,} steps, {report['tokens_seen']:,} tokens,"
               f" {report['train_time_s'] or 0:.0f}s, precision {report['precision']}")
    click.echo(f"best val     {best:.4f} nats/char{both}" if best is not None else "best val     n/a")
    click.echo(f"text         {report['data']['path']} (sha256 {report['data']['sha256'][:16]}…)")
    for name, count in (report["data"].get("splits") or {}).items():
        if count["files"]:
            click.echo(f"  {name:<10} {count['files']:,} files, {count['chars']:,} chars")
    click.echo(f"charlm       {report['charlm_version']} (checkpoint format {report['format_version']})")
