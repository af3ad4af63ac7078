"""Training, top to bottom: set up, loop, wrap up.

``train`` (the API) and ``run`` (the CLI's way in) open a ``session`` (the torchrun process group,
the locked run directory, the ``Run`` built by ``charlm.train.setup.setup`` and a ``Trainer`` for it) and
run ``fit``: the loop, which asks the trainer for a batch and a step until a budget, a signal, the
pruner or patience says stop, reads the steps' NaN/Inf verdicts when they are due, and logs,
evaluates or saves whenever their interval comes round. What a step does is ``Trainer.step``
(charlm/train/trainer.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from charlm.config import Config, changed_keys, resolve
from charlm.corpora import text_of
from charlm.data.source import TextSource
from charlm.errors import CharlmError
from charlm.train import distributed
from charlm.train.parts import TrainRequest
from charlm.train.report import QuietReport, Report
from charlm.train.rundir import resume_config, run_directory
from charlm.train.schedule import stop_reason
from charlm.train.setup import setup
from charlm.train.signals import StopRequest
from charlm.train.trainer import Trainer

__all__ = ["TrainRequest", "TrainResult", "fit", "plan", "run", "session", "train"]
# Why a loop stops, in rising priority: ranks that disagree take the highest, as one process takes
# the first of its checks (a spent budget before a stop request, before pruning, before patience).
STOP_CODES = (None, "early_stopping", "pruned", "interrupted", "max_time", "max_epochs", "max_steps")


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    stop_reason: str
    best_val_loss: float | None
    last_val_loss: float | None
    train_time: float
    tokens_per_s: float
    parameters: int = 0


def train(config: Config, text: "TextSource | str | Path | Sequence[str | Path]", out_dir: str | Path,
          resume: bool = False, init_from: str | None = None, extend_vocab: bool = False, progress: bool = True,
          on_eval: Callable[[int, float], bool] | None = None, given: Sequence[str] | None = None) -> TrainResult:
    """Train a model on ``text`` (a file, or several files, folders and globs) as ``config`` says,
    writing everything to ``out_dir``.

    ``resume`` continues the run in ``out_dir`` from its newest checkpoint, exactly where it was.
    ``on_eval(step, val_loss)`` is called after each evaluation; returning True stops the run
    (reason "pruned"): this is how a sweep stops hopeless trials early. ``given``: the config keys
    ``model.size: auto`` must leave as they are (default: those whose values differ from the defaults).
    """
    source = TextSource.of(text, config.data.include, config.data.exclude)
    request = TrainRequest(recording(config, source), frozenset(changed_keys(config) if given is None else given),
                           source, Path(out_dir), resume, init_from, extend_vocab, progress, on_eval)
    return run(request)


def recording(config: Config, source: TextSource) -> Config:
    """``config`` with the text it trains on in ``data.path`` (unless it names one or a corpus), so that
    ``charlm train --resume DIR`` finds it."""
    if config.data.path or config.data.corpus:
        return config
    return replace(config, data=replace(config.data, path=source.config_value()))


def plan(config_file: str | Path | None, overrides: Sequence[tuple[str, Any]], out: Path | None = None,
         resume_dir: Path | None = None, init_from: str | Path | None = None, extend_vocab: bool = False,
         progress: bool = True, check_lock: bool = True) -> TrainRequest:
    """What ``charlm train`` is asked to do, checked: the config (a resumed run's own, with only the
    changes a resume allows; see ``rundir.resume_config``), the text, the run directory
    (``runs/<text>-<time>`` unless given). ``check_lock``: see if a resumed run is still running
    (under torchrun rank 0 alone looks)."""
    if extend_vocab and not init_from:
        raise CharlmError("--extend-vocab only applies with --init-from CKPT")
    if resume_dir is not None:
        if init_from or config_file:
            raise CharlmError("--resume continues a run with its own config: drop --init-from/--config")
        if out is not None and out != resume_dir:
            raise CharlmError("--resume DIR writes to DIR: drop -o/--out")
        config, given, out = resume_config(resume_dir, overrides, check_lock), frozenset(), resume_dir
    else:
        config, given = resolve(str(config_file) if config_file else None, overrides)
    text = text_of(config, "no text to train on: give FILE, --corpus NAME, or data.path in the config")
    out = out or Path("runs") / f"{config.data.corpus or text.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return TrainRequest(recording(config, text), given, text, out, resume_dir is not None,
                        str(init_from) if init_from else None, extend_vocab, progress)


def run(request: TrainRequest) -> TrainResult:
    with session(request) as trainer:
        return fit(trainer)


@contextlib.contextmanager
def session(request: TrainRequest) -> Iterator[Trainer]:
    """Everything the loop runs inside: the process group (one process: a no-op), the run
    directory (rank 0 creates and locks it), the run set up in it, and its trainer."""
    ranks = distributed.setup(request.config.train.device)
    finished = False
    try:
        with run_directory(request.out_dir, fresh=not request.resume, owner=ranks.is_main):
            report = (Report if ranks.is_main else QuietReport)(request.out_dir, request.progress)
            try:
                built = setup(request, ranks, report)
                report.start(built, request.resume)
                yield Trainer(built, report)
            finally:
                report.close()
        finished = True
    finally:
        ranks.close(finished)


def fit(trainer: Trainer) -> TrainResult:
    """The training loop."""
    run, train = trainer.run, trainer.run.train
    on_eval, pruned = run.request.on_eval, False
    with StopRequest("stopping after this step and saving last.pt") as stop:
        while (reason := should_stop(trainer, stop.requested, pruned)) is None:
            trainer.step(trainer.batch())
            step = run.state.step
            if step % trainer.verdict_interval == 0 and trainer.read_verdicts():
                reason = "diverged"
                break
            if step % train.log_interval == 0:
                trainer.log_window()
            if step % train.eval_interval == 0:
                val_loss = trainer.evaluate()
                pruned = bool(run.ranks.is_main and on_eval and val_loss is not None and on_eval(step, val_loss))
            if step % train.checkpoint_interval == 0:
                trainer.save("last.pt")
    return finish(trainer, reason)


def should_stop(trainer: Trainer, requested: str | None, pruned: bool) -> str | None:
    """Why the loop must stop before the next step (None: go on), the clock taken into the run's
    counters; ``requested`` is a signal's name. Under torchrun every rank must stop at the same step
    and follow the same clock, so the ranks agree: every log_interval steps (a collective every step
    would stall the GPUs), and at a step or epoch budget's end, which every rank reaches at the same step."""
    run = trainer.run
    state, train = run.state, run.train
    state.train_time = trainer.elapsed()
    reason = (stop_reason(train, state.step, trainer.epoch(), state.train_time)
              or ("interrupted" if requested else None)
              or ("pruned" if pruned else None)
              or ("early_stopping" if train.patience and state.evals_since_best >= train.patience else None))
    if run.ranks.enabled and state.step % train.log_interval and reason not in ("max_steps", "max_epochs"):
        return None  # the clock, a signal or the pruner wait for the next agreement
    code, state.train_time = run.ranks.agree(STOP_CODES.index(reason), state.train_time)
    return STOP_CODES[code]


def finish(trainer: Trainer, reason: str | None) -> TrainResult:
    """A last evaluation and last.pt (after a divergence neither: the last good checkpoint stays),
    the end event; a divergence is an error."""
    run, report = trainer.run, trainer.report
    state = run.state
    state.train_time = trainer.elapsed()
    if trainer.read_verdicts():
        reason = "diverged"
    if reason != "diverged":
        # An interrupted run stops at once and without the extra evaluation, so that pausing and
        # resuming gives exactly the run that was never paused.
        if state.step % run.train.eval_interval != 0 and reason != "interrupted":
            trainer.evaluate()
        trainer.save("last.pt")
    report.end(state, reason, trainer.last_val, trainer.progress())
    if reason == "diverged":
        raise report.divergence(state, run.train.lr, run.train.clip_norm)
    return TrainResult(out_dir=run.request.out_dir, step=state.step, stop_reason=reason or "done",
                       best_val_loss=state.best_val_loss, last_val_loss=trainer.last_val, train_time=state.train_time,
                       tokens_per_s=trainer.tokens_per_s, parameters=run.model.num_parameters())
