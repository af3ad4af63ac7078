"""A training run: set up, stepped, evaluated, saved.

The API: ``train`` (a ``Config`` in Python), ``plan`` and ``run`` (what ``charlm train`` does),
``session`` and ``fit`` (the same set-up driven a step at a time); they live in ``loop``, the loop
read top to bottom. The parts, in the order a run meets them:

- ``parts``: ``TrainRequest`` (what a run is asked to do) and ``Run`` (everything it is made of);
- ``setup``: ``setup``, which builds a ``Run`` part by part; ``auto`` (``model.size: auto``: the probe
  and the rule); ``distributed`` (torchrun); ``rundir`` (the run directory, its lock, what a resume
  takes and may change);
- ``trainer``: ``Trainer``, where a step happens (``Trainer.step``), an evaluation and a checkpoint;
- ``checkpoint``: where a checkpoint is written and read (``Checkpoint.save``, ``Checkpoint.load``);
- ``state``: where training stands (counters, carried streams, the log window, random states);
  ``verdict`` (the NaN/Inf verdicts, judged on the device); ``averaging`` (weight averaging);
  ``schedule`` (learning rate and budgets); ``signals`` (Ctrl-C and SIGTERM as stop requests);
- ``report``: what a run says and writes, over ``console`` (the terminal) and ``logs``
  (metrics.jsonl, TensorBoard).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from charlm.train.loop import TrainRequest, TrainResult, fit, plan, run, session, train

__all__ = ["TrainRequest", "TrainResult", "fit", "plan", "run", "session", "train"]


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use: the loop imports torch, and the command line and the
    sweep scheduler import parts of this package without it."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from charlm.train import loop

    return getattr(loop, name)
