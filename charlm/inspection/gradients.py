"""Vanishing gradients through time, measured on a real model.

For a position t of a text, L_t is the loss of the prediction made after reading character t and
x_{t-k} is the input vector (the embedding) the model read k steps earlier. ‖∂L_t/∂x_{t-k}‖ says how
much that prediction can still be moved by what was read k steps before: a plain tanh RNN's
curve falls exponentially with k, a gated cell's (GRU, LSTM) falls far more slowly.

Each measured position gets its own window: ``burn_in`` characters read without gradients bring
the state to what it is in the middle of a text, then K + 1 characters are read with gradients on
their embeddings and the loss at the last one is differentiated. The rows of a batch never
interact (no dropout in eval mode), so one backward pass gives every row's own gradient.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlm.errors import CharlmError
from charlm.model.network import CharRNN
from charlm.runtime import float64_device


@dataclass
class GradientCurve:
    """‖∂L_t/∂x_{t-k}‖ for k = 0…K, averaged over ``positions`` positions of a text."""

    label: str
    cell: str
    mean: list[float]
    median: list[float]
    positions: int
    details: dict = field(default_factory=dict)

    @property
    def max_distance(self) -> int:
        return len(self.mean) - 1

    def as_dict(self) -> dict:
        return asdict(self)


def _no_cudnn(model: CharRNN) -> contextlib.AbstractContextManager:
    # cuDNN refuses to run an RNN's backward pass in eval mode; the native kernels do not.
    if model.head.weight.is_cuda:
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


def input_gradient_norms(model: CharRNN, windows: torch.Tensor, burn_in: int) -> torch.Tensor:
    """(rows, K + 1) gradient norms: column k is ‖∂L_t/∂x_{t-k}‖, with t the last input of each row.

    ``windows`` is (rows, burn_in + K + 2) token ids: ``burn_in`` ids to warm the state up, the
    K + 1 inputs, then the target of the last input.
    """
    model.eval()
    stack, head = model.stack_and_head("forward")
    rows = windows.shape[0]
    with torch.no_grad():
        state = model.initial_state(rows, windows.device)
        if burn_in:
            _, state = model(windows[:, :burn_in], state)
    inputs, target = windows[:, burn_in:-1], windows[:, -1]
    embedded = model.embedding(inputs).detach().requires_grad_(True)
    with _no_cudnn(model), torch.enable_grad():
        output, _ = stack(embedded, state if model.state_size > 1 else state[0])
        logits = head(output[:, -1])
        # A sum, not a mean: each row's loss depends on its own inputs only, so the gradient of the
        # sum with respect to a row's embeddings is exactly that row's own gradient.
        loss = F.cross_entropy(logits, target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, embedded)
    return grad.norm(dim=-1).flip(1)


def sample_windows(tokens: np.ndarray, count: int, length: int, seed: int) -> np.ndarray:
    """``count`` windows of ``length`` consecutive tokens at seeded random places of ``tokens``."""
    tokens = np.asarray(tokens)
    if len(tokens) < length:
        raise CharlmError(
            f"the text has {len(tokens):,} characters but one measurement needs {length:,}"
            " (burn-in + max distance + 2): give a longer text or a smaller --max-distance"
        )
    starts = np.random.default_rng(seed).integers(0, len(tokens) - length + 1, size=count)
    return np.stack([tokens[s:s + length] for s in starts]).astype(np.int64)


def gradient_curve(
    model: CharRNN,
    tokens: np.ndarray,
    label: str,
    max_distance: int = 200,
    positions: int = 256,
    burn_in: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> GradientCurve:
    """The mean and median of ‖∂L_t/∂x_{t-k}‖ over ``positions`` random positions of ``tokens``."""
    from tqdm import tqdm

    # In float64: a tanh RNN's gradient falls below float32's smallest number within 100 steps,
    # and a curve that drops to exactly zero says less than one that keeps falling.
    model = copy.deepcopy(model).to(float64_device(model.head.weight.device)).double()
    device = model.head.weight.device
    windows = sample_windows(tokens, positions, burn_in + max_distance + 2, seed)
    norms = []
    for start in tqdm(range(0, positions, batch_size), desc=label, unit="batch", disable=not progress,
                      leave=False):
        batch = torch.from_numpy(windows[start:start + batch_size]).to(device)
        norms.append(input_gradient_norms(model, batch, burn_in).double().cpu())
    table = torch.cat(norms)
    return GradientCurve(label=label, cell=model.cell, mean=table.mean(0).tolist(),
                         median=table.median(0).values.tolist(), positions=positions,
                         details={"burn_in": burn_in, "seed": seed})


def summary_line(curve: GradientCurve) -> str:
    """The curve at a few distances, e.g. ``LABEL: k=1 3.1e-02  k=10 …  k=200 1.5e-06  (k=200 / k=1: 4.8e-05)``."""
    marks = [k for k in (1, 10, 50, 100, 200, 500, 1000) if k <= curve.max_distance]
    values = "  ".join(f"k={k} {curve.mean[k]:.2e}" for k in marks)
    ratio = curve.mean[marks[-1]] / curve.mean[1] if curve.mean[1] > 0 else float("nan")
    return f"{curve.label}: {values}  (k={marks[-1]} / k=1: {ratio:.1e})"


def plot_curves(curves: list[GradientCurve], path: Path, text_name: str) -> None:
    from charlm.inspection.plot import line_plot

    # One colour per cell type; fresh models dashed, so a cell's fresh and trained curves pair up.
    palette = {"rnn_tanh": "tab:blue", "rnn_relu": "tab:purple", "gru": "tab:orange", "lstm": "tab:green",
               "mingru": "tab:red", "minlstm": "tab:brown"}
    series = []
    for c in curves:
        style = {"linestyle": "--" if "fresh" in c.label else "-"}
        twins = [o for o in curves if o.cell == c.cell and ("fresh" in o.label) == ("fresh" in c.label)]
        if len(twins) == 1:  # several models of one cell and kind keep matplotlib's own colours
            style["color"] = palette.get(c.cell)
        series.append((c.label, list(range(1, c.max_distance + 1)), c.mean[1:], style))
    line_plot(path, series, title=f"How far back the loss reaches ({text_name}; dashed: fresh)",
              xlabel="distance k (characters back)", ylabel="mean ‖∂L_t / ∂x_(t−k)‖", log_y=True)


@dataclass
class GradientReport:
    """Curves of several models on one text (or each on its own val split), as gradients.json holds them."""

    text: Path | None
    max_distance: int
    positions: int
    burn_in: int
    seed: int
    curves: list[GradientCurve]

    def as_dict(self) -> dict:
        return {"text": str(self.text) if self.text else "each model's own val split",
                "max_distance": self.max_distance, "positions": self.positions, "burn_in": self.burn_in,
                "seed": self.seed, "curves": [c.as_dict() for c in self.curves]}

    def save(self, out: Path) -> None:
        """gradients.json and gradients.png in the folder ``out``."""
        import json

        from charlm.fsutil import atomic_write_text

        atomic_write_text(out / "gradients.json", json.dumps(self.as_dict(), indent=1) + "\n")
        plot_curves(self.curves, out / "gradients.png", self.text.name if self.text else "each model's val split")


def measure(sources: list[Path], cells: list[str], max_distance: int = 200, positions: int = 256,
            burn_in: int = 100, seed: int = 0, device: str = "cpu", progress: bool = False,
            on_curve: Callable[[GradientCurve], None] | None = None) -> GradientReport:
    """``charlm inspect gradients``: a curve for each model among ``sources`` (run directories,
    checkpoints, or configs for fresh models, one per cell of ``cells``), measured on the one text
    file among them or else on each model's own val split. ``on_curve`` hears each curve as it is done."""
    from charlm.data.source import check_text_file
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
    curves = []
    for subject in load_subjects(models, text, cells, seed, device):
        curves.append(gradient_curve(subject.model, subject.tokens, subject.label, max_distance, positions, burn_in,
                                     seed=seed, progress=progress))
        if on_curve is not None:
            on_curve(curves[-1])
    return GradientReport(text, max_distance, positions, burn_in, seed, curves)
