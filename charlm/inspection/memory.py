"""A long-range memory task: can a cell carry one fact across ``gap`` characters of text?

Each example is one line: a key (``A`` or ``B``), filler text made of short words, a cue ``=``,
then the answer (``x`` after key ``A``, ``y`` after ``B``) exactly ``gap`` characters after the
key, and a line break:

    Bthe dog sat on a mat and it ran far=y

It is the seeds' "the dog(s) … has/have" in miniature: the only way to predict the character
after ``=`` is to have kept the key through the filler, while also reading the filler (the model
is a character language model of these lines: its loss covers every character). To make a brief
training enough, the decision counts once more on its own, as much as the rest of the line
together. A small model of each cell type is trained on lines of one gap, then scored on fresh
lines: accuracy = how often it gives the right answer more probability than the wrong one.
Chance is 50 %.

Why the filler is text and not noise: with unpredictable filler and a loss on the answer alone, a
plain tanh RNN learns a latch (one unit pushed to ±1 that ignores its input) as easily as the
gated cells do; having to model the text in between is what takes its state away.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data.vocab import Vocab
from charlm.errors import CharlmError
from charlm.model.network import CharRNN

KEYS = "AB"
ANSWERS = "xy"  # neither occurs in the filler words
CUE = "="
WORDS = ("the", "dog", "cat", "sat", "on", "mat", "big", "red", "ran", "far", "and", "it", "was", "a", "of", "to")
FILLER = "".join(sorted(set("".join(WORDS)) | {" "}))
VOCAB = Vocab(sorted(set(KEYS + ANSWERS + CUE + FILLER + "\n")))


def make_lines(count: int, gap: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``count`` lines whose answer sits exactly ``gap`` characters after the key, and the keys
    (0 for A, 1 for B)."""
    if gap < 2:
        raise CharlmError(f"gap {gap} is too short: the cue takes one character, so gaps start at 2")
    keys = rng.integers(0, 2, size=count)
    lines = []
    for key in keys:
        filler = ""
        while len(filler) < gap - 2:
            filler += WORDS[rng.integers(len(WORDS))] + " "
        lines.append(KEYS[key] + filler[:gap - 2] + CUE + ANSWERS[key] + "\n")
    return lines, keys


def encode_batch(lines: list[str]) -> torch.Tensor:
    return torch.tensor(np.stack([VOCAB.encode(line) for line in lines]), dtype=torch.long)


def answer_logits(logits: torch.Tensor, gap: int) -> torch.Tensor:
    """The two answers' logits (rows, 2) at the decision point, from the logits of a whole line
    read without its last character: the output after reading the cue predicts the answer."""
    answer_ids = [VOCAB.index[a] for a in ANSWERS]
    return logits[:, gap - 1, answer_ids]


@dataclass
class MemoryResult:
    cell: str
    gap: int
    accuracy: float
    steps: int
    seconds: float
    final_loss: float

    def as_dict(self) -> dict:
        return asdict(self)


def train_and_score(
    cell: str,
    gap: int,
    steps: int = 800,
    batch_size: int = 32,
    hidden_size: int = 64,
    lr: float = 3e-3,
    test_lines: int = 1000,
    seed: int = 0,
) -> MemoryResult:
    """Train a fresh one-layer ``cell`` model on lines of ``gap``, then score it on new lines.

    Training stops early once the decision's loss has stayed below 0.02 for 20 steps (solved).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, gap])
    # The textbook forget bias of 1 (Gers et al.), which docs/memory.json was measured with: it lets an
    # LSTM start out remembering, the very thing this task asks.
    model = CharRNN(len(VOCAB), cell=cell, hidden_size=hidden_size, embedding_size=16, num_layers=1, forget_bias=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    started = time.perf_counter()
    model.train()
    solved = 0
    decision_loss = float("nan")
    step = 0
    for step in range(1, steps + 1):
        lines, keys = make_lines(batch_size, gap, rng)
        batch = encode_batch(lines)
        logits, _ = model(batch[:, :-1])
        decision = F.cross_entropy(answer_logits(logits, gap), torch.from_numpy(keys))
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()) + decision
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        decision_loss = decision.item()
        solved = solved + 1 if decision_loss < 0.02 else 0
        if solved >= 20:
            break
    seconds = time.perf_counter() - started
    model.eval()
    test_rng = np.random.default_rng([seed, gap, 1])  # lines the model never saw
    correct = 0
    with torch.no_grad():
        for start in range(0, test_lines, 250):
            lines, keys = make_lines(min(250, test_lines - start), gap, test_rng)
            logits, _ = model(encode_batch(lines)[:, :-1])
            correct += int((answer_logits(logits, gap).argmax(dim=1).numpy() == keys).sum())
    return MemoryResult(cell=cell, gap=gap, accuracy=correct / test_lines, steps=step, seconds=seconds,
                        final_loss=decision_loss)


def memory_jobs(cells: list[str], gaps: list[int], steps: int, hidden_size: int) -> list[tuple[str, int]]:
    """Every (cell, gap) to train, checked."""
    from charlm.config import CELLS

    for cell in cells:
        if cell not in CELLS:
            raise CharlmError(f"unknown cell {cell!r} in --cells: choose from {', '.join(CELLS)}")
    if not cells or not gaps or min(gaps) < 2 or steps < 1 or hidden_size < 1:
        raise CharlmError("--cells and --gaps need at least one entry each, gaps start at 2, and --steps and"
                          " --hidden-size must be at least 1")
    return [(cell, gap) for cell in cells for gap in gaps]


def save_report(results: list[MemoryResult], out, steps: int, hidden_size: int, seed: int) -> dict:
    """memory.json and memory.png in the folder ``out``; the report as memory.json holds it."""
    import json

    from charlm.fsutil import atomic_write_text

    report = {"steps": steps, "hidden_size": hidden_size, "seed": seed, "results": [r.as_dict() for r in results]}
    atomic_write_text(out / "memory.json", json.dumps(report, indent=1) + "\n")
    plot_results(results, out / "memory.png")
    return report


def _one_thread() -> None:
    torch.set_num_threads(1)


def run_all(jobs: list[tuple[str, int]], steps: int, hidden_size: int, seed: int, workers: int,
            progress: bool = True) -> list[MemoryResult]:
    """``train_and_score`` for every (cell, gap), ``workers`` at a time in separate processes.

    The models are small (64 units), so one thread each and several at once use the cores far
    better than one model at a time on all of them. Every job is seeded: the results do not depend
    on ``workers``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    results: dict[tuple[str, int], MemoryResult] = {}
    with tqdm(total=len(jobs), desc="memory", unit="run", disable=not progress) as bar:
        if workers <= 1:
            threads = torch.get_num_threads()
            _one_thread()  # as in the workers, so the numbers are the same either way
            try:
                for cell, gap in jobs:
                    results[cell, gap] = train_and_score(cell, gap, steps=steps, hidden_size=hidden_size, seed=seed)
                    bar.update()
            finally:
                torch.set_num_threads(threads)
        else:
            context = multiprocessing.get_context("spawn")  # no forking of a process that has started threads
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
                futures = {pool.submit(train_and_score, cell, gap, steps=steps, hidden_size=hidden_size, seed=seed):
                           (cell, gap) for cell, gap in sorted(jobs, key=lambda job: -job[1])}  # longest first
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.set_postfix_str(f"{futures[future][0]}, gap {futures[future][1]}")
                    bar.update()
    return [results[job] for job in jobs]


def results_table(results: list[MemoryResult]) -> str:
    """Accuracy at the decision point, one row per cell and one column per gap."""
    gaps = sorted({r.gap for r in results})
    cells = list(dict.fromkeys(r.cell for r in results))
    by_key = {(r.cell, r.gap): r for r in results}
    width = max(len("cell"), *(len(c) for c in cells))
    lines = [f"{'cell':<{width}}  " + "  ".join(f"{f'gap {g}':>8}" for g in gaps)]
    for cell in cells:
        cells_text = "  ".join(f"{100 * by_key[cell, g].accuracy:>7.1f}%" if (cell, g) in by_key else f"{'-':>8}"
                               for g in gaps)
        lines.append(f"{cell:<{width}}  {cells_text}")
    return "\n".join(lines)


def plot_results(results: list[MemoryResult], path) -> None:
    from charlm.inspection.plot import line_plot

    cells = list(dict.fromkeys(r.cell for r in results))
    series = []
    for cell in cells:
        rows = sorted((r for r in results if r.cell == cell), key=lambda r: r.gap)
        series.append((cell, [r.gap for r in rows], [100 * r.accuracy for r in rows]))
    line_plot(path, series, title="Remembering one character across a gap", xlabel="gap (characters)",
              ylabel="accuracy at the decision point (%)", log_x=True, hline=(50.0, "chance"), markers=True,
              xticks=sorted({r.gap for r in results}))
