"""Training, top to bottom: set up, loop, wrap up.

``train`` (the API) and ``run`` (the CLI's way in) open a ``session`` (the torchrun process group,
the locked run directory, a ``Trainer`` built in it) and run ``fit``: the loop, which asks the
trainer for a batch and a step until a budget, a signal, the pruner or patience says stop, with a
log line, an evaluation or a checkpoint whenever their interval comes round. What a step does is
``Trainer.step`` (charlm/trainer.py). The host waits for the device once a step for the NaN/Inf
check (``train.nan_check: step``, a CPU's choice), or not at all between log intervals (``log``, a
GPU's: the verdict stays on the device); every ``log_interval`` steps it reads the summed loss.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlm import distributed
from charlm.config import Config, build_config
from charlm.corpora import text_of
from charlm.errors import CharlmError
from charlm.rundir import resume_config, run_directory
from charlm.trainer import Outcome, Trainer, TrainRequest, TrainResult

if TYPE_CHECKING:
    from charlm.documents import TextSource

__all__ = ["TrainRequest", "TrainResult", "fit", "plan", "run", "session", "train"]


def train(config: Config, text: "TextSource | str | Path | Sequence[str | Path]", out_dir: str | Path, resume: bool = False,
          init_from: str | None = None, extend_vocab: bool = False, progress: bool = True,
          on_eval: Callable[[int, float], bool] | None = None) -> TrainResult:
    """Train a model on ``text`` (a file, or several files, folders and globs) as ``config`` says,
    writing everything to ``out_dir``.

    ``resume`` continues the run in ``out_dir`` from its newest checkpoint, exactly where it was.
    ``on_eval(step, val_loss)`` is called after each evaluation; returning True stops the run
    (reason "pruned"): this is how a sweep stops hopeless trials early.
    """
    return run(TrainRequest(config, text, Path(out_dir), resume, init_from, extend_vocab, progress, on_eval))


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
        config, out = resume_config(resume_dir, overrides, check_lock), resume_dir
    else:
        config = build_config(str(config_file) if config_file else None, overrides)
    text = text_of(config, "no text to train on: give FILE, --corpus NAME, or data.path in the config")
    out = out or Path("runs") / f"{config.data.corpus or text.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return TrainRequest(config, text, out, resume_dir is not None, str(init_from) if init_from else None,
                        extend_vocab, progress)


def run(request: TrainRequest) -> TrainResult:
    with session(request) as trainer:
        return fit(trainer)


@contextlib.contextmanager
def session(request: TrainRequest) -> Iterator[Trainer]:
    """Everything the loop runs inside: the process group (one process: a no-op), the run
    directory (rank 0 creates and locks it), and a ``Trainer`` set up in it."""
    ranks = distributed.setup(request.config.train.device)
    finished = False
    try:
        with run_directory(request.out_dir, fresh=not request.resume, owner=ranks.is_main):
            trainer = Trainer(request, ranks)
            try:
                yield trainer
            finally:
                trainer.console.close()
        finished = True
    finally:
        ranks.close(finished)


def fit(trainer: Trainer) -> TrainResult:
    """The training loop."""
    cfg, on_eval = trainer.cfg, trainer.request.on_eval
    with StopRequest() as stop:
        while (reason := trainer.should_stop(stop.requested)) is None:
            if trainer.step(trainer.batch()) is Outcome.DIVERGED:
                reason = "diverged"
                break
            step = trainer.state.step
            if step % cfg.log_interval == 0:
                if trainer.settle() is Outcome.DIVERGED:  # train.nan_check log: the verdicts of the window
                    reason = "diverged"
                    break
                trainer.log_window()
            if step % cfg.eval_interval == 0:
                val_loss = trainer.evaluate()
                trainer.pruned = bool(trainer.main and on_eval and val_loss is not None and on_eval(step, val_loss))
            if step % cfg.checkpoint_interval == 0:
                trainer.save("last.pt")
    return trainer.finish(reason)


class StopRequest:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: stopping after this step and saving last.pt (Ctrl-C again to abort)",
              file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
