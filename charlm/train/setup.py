"""A training run built top to bottom: ``setup`` makes every part in order, each from what came before.

Threads and device; how the run starts (fresh, resumed from its newest checkpoint, or from another
checkpoint's weights); its text, in the vocabulary that start gives; the config, with what
``model.size: auto`` chose for this machine (rank 0 measures, every rank applies the same);
precision and batches; the model, weight average, optimizer and loss scale; the parts of where
training stands; and, for a resume, every part restored from the checkpoint. The result is a
``Run``: ``charlm.train.trainer.Trainer`` steps, evaluates and saves it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from charlm.config import Config, TrainConfig, format_duration, with_settings
from charlm.data import read_data
from charlm.data.base import RunData
from charlm.errors import CharlmError
from charlm.model.network import CharRNN, directions_of
from charlm.runtime import (LossScale, fused_kernels, loss_scaling, prepare_device, rank_device, resolve_device,
                            resolve_precision, set_threads, usable_precisions)
from charlm.train import auto
from charlm.train.averaging import weight_average
from charlm.train.checkpoint import Checkpoint
from charlm.train.distributed import Distributed, check_batch
from charlm.train.parts import Run, TrainRequest
from charlm.train.report import Report
from charlm.train.rundir import newest_checkpoint
from charlm.train.schedule import budget_progress, cooling_down, stop_reason
from charlm.train.state import LogWindow, Streams, TrainState

ARCHITECTURE_KEYS = ("cell", "hidden_size", "embedding_size", "num_layers", "tie_weights", "bidirectional", "block",
                     "ffn", "norm", "input_conv")


@dataclass
class Start:
    """How a run starts: ``resumed`` (its own newest checkpoint), ``source`` (--init-from), or neither."""

    resumed: Checkpoint | None = None
    source: Checkpoint | None = None

    @classmethod
    def of(cls, request: TrainRequest) -> "Start":
        if request.resume:
            return cls(resumed=newest_checkpoint(request.out_dir)[1])
        if request.init_from:
            return cls(source=Checkpoint.load(request.init_from))
        return cls()

    def architecture(self, config: Config, given: frozenset[str]) -> tuple[Config, frozenset[str]]:
        """The config, and the keys auto must leave alone: with --init-from the source's weights fix the
        architecture, and auto chooses only around it."""
        if self.source is None:
            return config, given
        keys = {f"model.{key}": getattr(self.source.config.model, key) for key in ARCHITECTURE_KEYS}
        return with_settings(config, keys, "--init-from"), given | set(keys)

    def extended(self, train: TrainConfig, out_dir: Path, steps_per_epoch: int, report: Report) -> "Start":
        """A wsd run that had begun its cool-down, resumed with a budget that puts the cool-down later,
        goes on from stable.pt (the run as it stood before the cool-down began), as a run given that
        budget from the start would; it keeps the best val loss reached since, so best.pt stays the best.
        Any other resume continues from the newest checkpoint."""
        path = out_dir / "stable.pt"
        if self.resumed is None or train.lr_schedule != "wsd" or not path.is_file():
            return self
        stable = Checkpoint.load(path)

        def cooling(checkpoint: Checkpoint, config: TrainConfig) -> bool:
            state = checkpoint.parts["state"]
            return cooling_down(config, budget_progress(config, state["step"], state["step"] / steps_per_epoch,
                                                        state["train_time"]))

        if stable.step >= self.resumed.step or not cooling(self.resumed, self.resumed.config.train) \
                or cooling(stable, train):
            return self
        report.extending(stable.step, self.resumed.step)
        stable.parts["state"] = {**stable.parts["state"], "best_val_loss": self.resumed.parts["state"]["best_val_loss"]}
        return replace(self, resumed=stable)

    def precision(self, configured: str, device: torch.device) -> str:
        """What training runs in: a resumed run's own where precision is auto (what it measured and chose)."""
        if self.resumed is not None and configured == "auto":
            return resolve_precision(self.resumed.precision, device)
        return resolve_precision(configured, device)


def setup(request: TrainRequest, ranks: Distributed, report: Report) -> Run:
    """The run ``request`` asks for, every part made in order (see the module's docstring)."""
    device = place(request.config.train, ranks)
    start = Start.of(request)
    data = read_text(request, start, report)
    config, fixed = start.architecture(request.config, request.given)
    decision = None
    if start.resumed is None:  # a resumed run keeps what it chose
        config, decision = configure(config, fixed, data, device, ranks, report)
    train = config.train
    precision = start.precision(train.precision, device)
    check_batch(ranks, train.batch_size)
    directions = directions_of(config.model.bidirectional)
    batches = {d: data.batches(train.batch_size, train.seq_len, train.seed, d) for d in directions}
    start = start.extended(train, request.out_dir, batches["forward"].steps_per_epoch, report)
    model = build_model(config, data, start.source).to(device)
    average = weight_average(model, train.ema_decay)
    if ranks.rank > 0:
        torch.manual_seed(train.seed + 1000 * ranks.rank)  # same weights, different dropout masks
    rows = ranks.share(train.batch_size)
    run = Run(request, config, ranks, device, precision, data, batches, rows, model, average,
              build_optimizer(model, train, device), LossScale(device.type, enabled=loss_scaling(device, precision)),
              TrainState(), Streams(directions, ranks, rows, device), LogWindow(directions, device, ranks), decision)
    if start.resumed is not None:
        run.load_state_dict(start.resumed.parts)
        check_budget_left(run)
    elif decision is not None:
        run.state.train_time = decision.probe_seconds  # the probe is part of the budget
    return run


def place(train: TrainConfig, ranks: Distributed) -> torch.device:
    """Threads (under torchrun: this machine's cores shared between its processes) and the device."""
    set_threads(train.threads or (max(1, (os.cpu_count() or 1) // ranks.local_world) if ranks.enabled else 0))
    device = rank_device(resolve_device(train.device), ranks.local_rank, ranks.enabled)
    prepare_device(device)
    return device


def read_text(request: TrainRequest, start: Start, report: Report) -> RunData:
    """The text, in the vocabulary the run starts with: a resumed run's own, the --init-from source's
    grown by the text's new characters, or the text's own; checked against what the run read before."""
    data_config = request.config.data
    vocab = start.resumed.vocab if start.resumed is not None else None
    if start.source is not None:
        own = read_data(request.text, data_config, progress=report.wants_bar)
        vocab = own.fine_tune_vocab(start.source.vocab, request.extend_vocab, request.init_from)
    data = read_data(request.text, data_config, vocab, progress=report.wants_bar)
    if start.resumed is not None and start.resumed.text.sha256 != data.sha256:
        raise CharlmError(f"{request.text} changed since this run started: resume with the original {data.what}, or"
                          f" start a new run from these weights with --init-from {request.out_dir / 'last.pt'}")
    if data.unknown:
        raise CharlmError(f"{request.text} has characters outside the vocabulary ({data.unknown})")
    report.text(data, advice=start.resumed is None)
    return data


def configure(config: Config, fixed: frozenset[str], data: RunData, device: torch.device, ranks: Distributed,
              report: Report) -> tuple[Config, auto.Decision | None]:
    """model.size auto: rank 0 probes this machine and chooses every key not ``fixed`` (charlm/train/auto.py;
    with a fixed size and precision auto, only the precision), every rank applies its choice. The
    config, and the decision (rank 0's; None elsewhere, and where nothing is left to choose)."""
    train = config.train
    precisions = (usable_precisions(device) if train.precision == "auto"
                  else [resolve_precision(train.precision, device)])
    if config.model.size != "auto" and len(precisions) == 1:
        return config, None
    data.batches(train.batch_size, train.seq_len, 0, "forward")  # too short a text fails here, not after a probe
    decision = measure(config, fixed, data, device, precisions) if ranks.is_main else None
    config = auto.apply(config, ranks.broadcast_object(decision.settings if decision is not None else None))
    if decision is not None:
        report.chosen(decision, data)
    return config, decision


def measure(config: Config, fixed: frozenset[str], data: RunData, device: torch.device,
            precisions: list[str]) -> auto.Decision:
    """What auto decides for this text on this machine."""
    held_out = data.eval_part(config.train.eval_max_chars)
    text = auto.Text(data.train.predicted, held_out.predicted if held_out is not None else 0, len(data.vocab),
                     data.window_length)
    if config.model.size == "auto":
        return auto.decide(config, fixed, text, device, precisions)
    return auto.decide_precision(config, fixed, len(data.vocab), device, precisions)


def build_model(config: Config, data: RunData, source: Checkpoint | None) -> CharRNN:
    """A fresh model from the run's seed, or (--init-from) the source's weights, grown to the text's
    vocabulary."""
    torch.manual_seed(config.train.seed)
    if source is None:
        return CharRNN.from_config(config.model, len(data.vocab))
    model = CharRNN.from_config(config.model, len(source.vocab))
    model.load_state_dict(source.weights)
    model.extend_vocab(len(data.vocab))
    return model


def build_optimizer(model: CharRNN, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (default), SGD with momentum or RMSprop; weight decay only on matrices."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        # The fused kernel does the whole update in one pass.
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused_kernels(device))
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=config.beta2)


def check_budget_left(run: Run) -> None:
    """A resumed run that has used its budget says so, and what to give to train further."""
    train, state = run.train, run.state
    spent = stop_reason(train, state.step, state.step / run.batches["forward"].steps_per_epoch, state.train_time)
    if spent:
        value = getattr(train, spent)
        shown = format_duration(value) if spent == "max_time" else f"{value:g}"
        raise CharlmError(f"{run.request.out_dir} has already used its budget (train.{spent} = {shown}) at step"
                          f" {state.step:,}: give a larger --{spent.replace('_', '-')} to train further")
