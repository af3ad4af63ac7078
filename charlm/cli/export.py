"""``charlm export``."""

from __future__ import annotations

from pathlib import Path

import click

from charlm.export import FORMATS


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="onnx: a step graph for onnxruntime and any ONNX runtime; html: one page that writes offline.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The file to write.")
@click.option("--direction", type=click.Choice(["forward", "backward"]), default="forward", show_default=True,
              help="Bidirectional models: which direction to export.")
@click.option("--float16", is_flag=True, help="html: weights as float16, half the size (probabilities to ~1e-3).")
def export_command(checkpoint: Path, fmt: str, output: Path, direction: str, float16: bool) -> None:
    """Export CHECKPOINT (a .pt file or a run directory) to run without charlm or torch.

    \b
    Examples:
      charlm export runs/shakespeare --format onnx -o shakespeare.onnx
      python examples/onnx_sample.py shakespeare.onnx --prime "ROMEO:" --seed 1
      charlm export runs/shakespeare --format html -o writer.html   # open it in any browser
    """
    from charlm.errors import CharlmError
    from charlm.export import export

    if float16 and fmt != "html":
        raise CharlmError("--float16 applies to --format html (an ONNX graph keeps float32)")
    written = export(checkpoint, fmt, output, direction, float16)
    click.echo(f"wrote {written} ({written.stat().st_size / 1e6:.2f} MB, {fmt}, {direction})")
