"""What a training run tells its user and writes beside its checkpoints.

The terminal's lines and progress bar (``Console``), ``metrics.jsonl`` and TensorBoard (``RunLog``),
``config.yaml`` and ``files.txt``: every message of a run is worded here, from the numbers the
set-up and the trainer hand over. Under torchrun only rank 0 reports; the others hold a
``QuietReport``, which says nothing and writes nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from charlm.config import format_duration
from charlm.errors import CharlmError
from charlm.fsutil import atomic_write_text
from charlm.train.console import Console
from charlm.train.logs import NullLog, RunLog, truncate_metrics
from charlm.version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from charlm.data.base import RunData
    from charlm.evaluate import EvalResult
    from charlm.train.auto import Decision
    from charlm.train.parts import Run
    from charlm.train.state import TrainState
    from charlm.train.verdict import Verdicts


class Report:
    """Rank 0's report of one run in ``out_dir``."""

    def __init__(self, out_dir: "Path", progress: bool = True):
        self.out_dir = out_dir
        self.console = Console(enabled=True, bar=progress)
        self.log: RunLog | NullLog = NullLog()

    @property
    def wants_bar(self) -> bool:
        return self.console.wants_bar

    # ---- set-up -----------------------------------------------------------------------------------

    def text(self, data: "RunData", advice: bool) -> None:
        """What reading the text found: the files it left out, and (``advice``) hints on training it."""
        skipped = data.tokens.skipped.summary()
        if skipped:
            self.console.say(f"{data.source.name}: {skipped} (listed in {self.out_dir / 'files.txt'})")
        for hint in data.hints() if advice else []:
            self.console.say(f"hint: {hint}")

    def extending(self, stable_step: int, newest_step: int) -> None:
        self.console.say(f"extending: the cool-down that began at step {stable_step:,} is undone (steps up to"
                         f" {newest_step:,} set aside); the run goes on from stable.pt at the stable rate over"
                         f" the longer budget")

    def chosen(self, decision: "Decision", data: "RunData") -> None:
        self.console.say(decision.line(data.tokens.size))

    def start(self, run: "Run", resumed: bool) -> None:
        """config.yaml, files.txt, the log (on resume without what a crash lost), the start event and
        line, the bar."""
        out_dir, data, step = self.out_dir, run.data, run.state.step
        atomic_write_text(out_dir / "config.yaml", run.config.to_yaml(f"resolved configuration of this run"
                                                                      f" (charlm {__version__})"))
        for name, text in data.run_files().items():
            atomic_write_text(out_dir / name, text)
        if resumed:
            truncate_metrics(out_dir / "metrics.jsonl", step)
        self.log = RunLog(out_dir, purge_from=step + 1 if resumed else None)
        self.log.event("start", step, resumed=resumed, device=str(run.device), precision=run.precision,
                       vocab_size=len(data.vocab), parameters=run.model.num_parameters(), **data.describe(),
                       steps_per_epoch=run.batches["forward"].steps_per_epoch, charlm_version=__version__)
        if run.decision is not None:
            self.log.event("probe", step, **run.decision.event())
        self.console.show_bar()
        self.console.say(self._start_line(run, resumed))

    def _start_line(self, run: "Run", resumed: bool) -> str:
        import torch

        from charlm.model.cells import describe_shape

        m = run.config.model
        shape = describe_shape(m.num_layers, m.hidden_size, m.cell, m.block, m.ffn, m.input_conv)
        return (f"{run.request.text.name}: {run.data.summary()} | {shape},"
                f" {run.model.num_parameters() / 1e6:.2f}M params | {run.device.type} {run.precision},"
                f" {torch.get_num_threads()} threads | {self.out_dir}"
                + (f" | resuming at step {run.state.step:,}" if resumed else ""))

    # ---- training ---------------------------------------------------------------------------------

    def window(self, state: "TrainState", means: dict[str, float], directions: tuple[str, ...], lr: float,
               tokens_per_s: float, epoch: float, progress: float, last_val: float | None) -> None:
        """A ``train`` event: the window's means; the bar moved on."""
        loss = means["loss_forward"]
        both = {f"loss_{d}": means[f"loss_{d}"] for d in directions} if len(directions) > 1 else {}
        self.log.event("train", state.step, loss=loss, bpc=loss / math.log(2), lr=lr, **both,
                       grad_norm=means["grad_norm"], clip_share=means["clipped"], tokens_per_s=tokens_per_s,
                       tokens=state.tokens_seen, time=state.train_time, epoch=epoch)
        val = f" val {last_val:.3f}" if last_val is not None else ""
        self.console.progress(progress, f"step {state.step:,} loss {loss:.3f}{val} {tokens_per_s / 1000:.1f}k tok/s")

    def grads(self, step: int, norms: dict[str, float]) -> None:
        self.log.event("grads", step, **norms)

    def skips(self, verdicts: "Verdicts", limit: int) -> None:
        """One ``skip`` event and one warning for the bad steps since the last read of the verdicts."""
        v = verdicts
        self.log.event("skip", v.last_step, skipped=v.skipped, bad_steps=v.longest_run, loss=v.last_loss,
                       grad_norm=v.last_grad_norm)
        if v.skipped == 1:
            which, updates, run = f"step {v.last_step:,}", "its update", f"{v.longest_run} in a row"
        else:
            which, updates, run = f"{v.skipped} steps up to step {v.last_step:,}", "their updates", \
                f"at most {v.longest_run} in a row"
        self.console.say(f"warning: {which} had a NaN or infinite loss or gradient; skipped {updates} ({run};"
                         f" {limit} in a row stop training)")

    def evaluation(self, state: "TrainState", results: dict[str, "EvalResult"], sample: str | None,
                   improved: bool) -> None:
        """An ``eval`` event, the sample in TensorBoard, and a line."""
        result = results["forward"]
        both: dict[str, float] = {}
        if len(results) > 1:
            for direction, r in results.items():
                both.update({f"val_loss_{direction}": r.loss, f"val_bpc_{direction}": r.bpc})
        self.log.event("eval", state.step, val_loss=result.loss, val_bpc=result.bpc, val_chars=result.chars, **both,
                       best_val_loss=state.best_val_loss, time=state.train_time)
        if sample is not None:
            self.log.text("sample", sample, state.step)
        self.log.flush()
        self.console.say(f"step {state.step:>7,} | val loss {result.loss:.4f} | {result.bpc:.3f} bpc"
                         + (f" | backward {both['val_loss_backward']:.4f}" if both else "")
                         + f" | {format_duration(state.train_time)}{' | best' if improved else ''}")

    def end(self, state: "TrainState", reason: str, last_val: float | None, progress: float) -> None:
        self.console.progress(progress)
        self.console.close()
        self.log.event("end", state.step, reason=reason, time=state.train_time, best_val_loss=state.best_val_loss,
                       last_val_loss=last_val, tokens=state.tokens_seen, skipped_steps=state.skipped_steps,
                       overflow_steps=state.overflow_steps)
        self.log.close()

    def close(self) -> None:
        self.console.close()

    def divergence(self, state: "TrainState", lr: float, clip_norm: float) -> CharlmError:
        """The error a run that diverged ends with: what happened, what to change, what is kept."""
        from charlm.train.rundir import newest_checkpoint

        clip = f"lower train.clip_norm (now {clip_norm:g})" if clip_norm > 0 else "turn on train.clip_norm (e.g. 1.0)"
        try:
            path, kept = newest_checkpoint(self.out_dir)
            left = f"{path} (step {kept.step:,}) is kept"
        except CharlmError:
            left = "no checkpoint had been written yet"
        return CharlmError(f"training stopped at step {state.step:,}: {state.bad_steps} steps in a row had a NaN or"
                           f" infinite loss or gradient (exploding gradients); lower train.lr (now {lr:g}) or {clip},"
                           f" then resume or start again; {left}")


class QuietReport(Report):
    """What ranks other than 0 report under torchrun: nothing."""

    def __init__(self, out_dir: "Path", progress: bool = True):
        super().__init__(out_dir, progress)
        self.console = Console(enabled=False)

    def text(self, data: "RunData", advice: bool) -> None:
        pass

    def start(self, run: "Run", resumed: bool) -> None:
        pass

    def evaluation(self, *args: Any, **kwargs: Any) -> None:
        pass
