"""PNG plots with matplotlib (imported here only, so nothing else pays for it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from charlm.fsutil import atomic_write_bytes


def line_plot(
    path: Path,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]] | tuple[str, Sequence[float], Sequence[float], dict]],
    title: str,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    log_y: bool = False,
    hline: tuple[float, str] | None = None,
    markers: bool = False,
    xticks: Sequence[float] | None = None,
) -> None:
    """Write one line per ``(label, xs, ys[, matplotlib style])`` to ``path`` as a PNG (atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, xs, ys, *style in series:
        axes.plot(xs, ys, label=label, marker="o" if markers else None, linewidth=1.6, **(style[0] if style else {}))
    if hline is not None:
        axes.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    if log_x:
        axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    if xticks is not None:
        axes.set_xticks(list(xticks), [f"{t:g}" for t in xticks])
        axes.minorticks_off()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
