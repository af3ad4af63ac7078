"""What a training run is made of: the request that asks for it (``TrainRequest``, from the command
line or the API) and the ``Run`` that ``charlm.train.setup.setup`` builds from it, whose parts are
saved and restored as one list (``Run.parts``). The report, the trainer and the loop all read a
``Run``; only the set-up makes one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from charlm.config import Config, TrainConfig
from charlm.data.base import Batches, RunData
from charlm.data.source import TextSource
from charlm.model.network import CharRNN
from charlm.runtime import LossScale
from charlm.train.averaging import NoAverage, WeightAverage
from charlm.train.distributed import Distributed
from charlm.train.state import LogWindow, RandomState, Streams, TrainState

if TYPE_CHECKING:
    from charlm.train.auto import Decision


@dataclass
class TrainRequest:
    """What a training run is asked to do: the one object that travels from the CLI or API to ``setup``."""

    config: Config
    given: frozenset[str]  # the config keys the user gave; model.size auto chooses only the others
    text: TextSource  # a file, or many (files, folders, globs; see charlm.data.source)
    out_dir: Path
    resume: bool = False  # continue the run in out_dir from its newest checkpoint
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning)
    extend_vocab: bool = False  # with init_from: give the text's new characters embedding rows
    progress: bool = True  # the progress bar (evaluations are printed either way)
    on_eval: Callable[[int, float], bool] | None = None  # after each evaluation; True stops the run ("pruned")


@dataclass
class Run:
    """Everything one training run is made of."""

    request: TrainRequest
    config: Config  # as resolved: the user's, with what auto chose and what --init-from fixes
    ranks: Distributed
    device: torch.device
    precision: str
    data: RunData
    batches: dict[str, Batches]  # per direction
    rows: slice  # this rank's share of the batch
    model: CharRNN
    average: WeightAverage | NoAverage
    optimizer: torch.optim.Optimizer
    scaler: LossScale
    state: TrainState
    streams: Streams
    window: LogWindow
    decision: "Decision | None"  # what model.size auto measured and chose (None: nothing to choose)

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(self.batches)

    def parts(self) -> dict[str, Any]:
        """Every part of where training stands, by the name a checkpoint keeps it under: saved and
        restored as one list (``state_dict``, ``load_state_dict``)."""
        return {"model": self.model, "average": self.average, "optimizer": self.optimizer, "scaler": self.scaler,
                "state": self.state, "streams": self.streams, "log_window": self.window,
                "rng": RandomState(self.ranks)}

    def state_dict(self) -> dict[str, Any]:
        """Each part's state (a collective under torchrun: every rank's streams and random state)."""
        return {name: part.state_dict() for name, part in self.parts().items()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        for name, part in self.parts().items():  # the model before its average, which swaps weights in
            part.load_state_dict(saved[name])
