"""``charlm export``: a trained model as a file that needs neither charlm nor torch to run.

- ``onnx``: a one-character step graph, ``(tokens (batch,), state...) -> (logits (batch, vocab),
  state...)``, of one direction, with the vocabulary, markers, cell, sizes and the run's summary in
  the model's metadata (charlm/export/graph.py); ``examples/onnx_sample.py`` samples from it with
  onnxruntime and numpy alone.
- ``html``: one self-contained page that writes in the model's style in any browser, offline; the
  step runs in plain JavaScript (charlm/export/page.py, charlm/export/writer.html).

Both carry the model's card (charlm/export/card.py) and are written atomically: a failure leaves no
file, or the old one.
"""

from __future__ import annotations

from pathlib import Path

FORMATS = ("onnx", "html")


def export(checkpoint: str | Path, fmt: str, output: str | Path, direction: str = "forward",
           float16: bool = False) -> Path:
    """Write ``checkpoint`` (a .pt file or a run directory) as ``fmt`` to ``output``."""
    import charlm
    from charlm.errors import CharlmError

    if fmt not in FORMATS:
        raise CharlmError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    output = Path(output)
    if output.parent.exists() and not output.parent.is_dir():
        raise CharlmError(f"cannot write {output}: {output.parent} is a file, not a folder")
    if not output.parent.exists():
        raise CharlmError(f"cannot write {output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise CharlmError(f"cannot write {output}: it is a folder; give a file name (-o model.{fmt})")
    lm = charlm.load(checkpoint, device="cpu")
    if direction == "backward" and not lm.model.bidirectional:
        raise CharlmError("this model reads forward only: --direction backward needs a bidirectional model")
    if fmt == "onnx":
        from charlm.export.graph import write_onnx

        write_onnx(lm, direction, output)
    else:
        from charlm.export.page import write_html

        write_html(lm, direction, output, float16)
    return output
