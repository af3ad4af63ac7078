"""One training run's moving parts, and what a step does with them.

Where a step happens: ``Trainer.step``. Forward over each direction's batch from its carried state
(truncated BPTT), backward, one all-reduce under torchrun, clipping, the NaN check, the optimizer
update. ``evaluate``, ``log_window`` and ``save`` are the other things the loop asks for; the loop
itself, readable in one screen, is ``charlm.train.fit``.

A ``Trainer`` is built from a ``TrainRequest`` (config, text, run directory, and how the run
starts: fresh, resumed from its newest checkpoint, or from another checkpoint's weights). Its
mutable state is one ``TrainState``; its checkpoint is one ``Checkpoint``.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlm import __version__, auto
from charlm.averaging import WeightAverage
from charlm.checkpoint import Checkpoint, TextRecord, restore_rng_states, rng_states
from charlm.config import Config, TrainConfig, format_duration, set_key
from charlm.console import Console
from charlm.data import StreamBatches, Vocab, format_chars, load_tokens
from charlm.documents import TextSource
from charlm.distributed import Distributed, check_batch
from charlm.errors import CharlmError
from charlm.evaluate import EvalResult, evaluate_directions
from charlm.fsutil import atomic_write_text
from charlm.lines import IGNORE, LineBatches
from charlm.logs import NullLog, RunLog, truncate_metrics
from charlm.model import CharRNN, detach_state
from charlm.rundata import RunData
from charlm.rundir import newest_checkpoint
from charlm.runtime import (autocast, fused_kernels, loss_scaling, nan_check, prepare_device, rank_device,
                            resolve_device, resolve_precision, restore_scaler, set_threads, usable_precisions)
from charlm.sample import Sampler, preview
from charlm.schedule import budget_progress, learning_rate, stop_reason
from charlm.state import TrainState
from charlm.verdict import PendingVerdicts, Verdicts

ARCHITECTURE_KEYS = ("cell", "hidden_size", "embedding_size", "num_layers", "tie_weights", "bidirectional")
# Why a loop stops, in rising priority: ranks that disagree take the highest, as one process takes
# the first of its checks (a spent budget before a stop request, before pruning, before patience).
STOP_CODES = (None, "early_stopping", "pruned", "interrupted", "max_time", "max_epochs", "max_steps")
PREVIEW_LINES = 8  # lines mode: lines in the sample logged at each evaluation

Batch = dict[str, tuple[torch.Tensor, torch.Tensor]]  # direction -> (inputs, targets), on the device


@dataclass
class TrainRequest:
    """What a training run is asked to do: the one object that travels from the CLI or API to the trainer."""

    config: Config
    text: "TextSource | str | Path"  # a file, or many (files, folders, globs; see charlm.documents)
    out_dir: Path
    resume: bool = False  # continue the run in out_dir from its newest checkpoint
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning)
    extend_vocab: bool = False  # with init_from: give the text's new characters embedding rows
    progress: bool = True  # the progress bar (evaluations are printed either way)
    on_eval: Callable[[int, float], bool] | None = None  # after each evaluation; True stops the run ("pruned")

    def __post_init__(self) -> None:
        # The request owns its config (--init-from sets the architecture in it), and records where the
        # text is, so that `charlm train --resume DIR` finds it.
        self.config = copy.deepcopy(self.config)
        data = self.config.data
        self.text, self.out_dir = TextSource.of(self.text, data.include, data.exclude), Path(self.out_dir)
        if not data.path and not data.corpus:
            data.path = self.text.config_value()
        train, explicit = self.config.train, self.config.explicit
        if "train.max_epochs" not in explicit and {"train.max_time", "train.max_steps"} & explicit:
            train.max_epochs = None  # the default 10 epochs is for a run given no budget: --max-time 10m means 10 minutes


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


class Outcome(enum.Enum):
    GOOD = "good"
    SKIPPED = "skipped"  # a NaN or Inf loss or gradient: no update
    OVERFLOW = "overflow"  # the fp16 loss scale was too high: no update, a lower scale next time
    DIVERGED = "diverged"  # train.max_bad_steps skipped steps in a row


class Trainer:
    def __init__(self, request: TrainRequest, ranks: Distributed):
        self.request = request
        self.config = request.config
        self.cfg: TrainConfig = request.config.train
        self.ranks = ranks
        self.main = ranks.is_main  # the one process that logs and writes checkpoints
        self.console = Console(enabled=self.main, bar=request.progress)
        self._place()
        resumed, source, vocab = None, None, None  # a fresh run: the text's own characters
        if request.resume:
            resumed = newest_checkpoint(request.out_dir)[1]
            vocab = resumed.vocab  # a resumed run keeps its vocabulary
        elif request.init_from:
            source, vocab = self._init_source()  # the source's, grown by the text's new characters
        self._read_data(vocab, resumed)
        self.decision = self._auto() if not request.resume else None
        self._settle(resumed)
        if self.decision is not None:
            self.console.say(self.decision.line(self.data.size_bytes()))
        self._build(source)
        self.state = TrainState.fresh(self.directions, self.device)
        if resumed is not None:
            self._restore(resumed)
        elif self.decision is not None:
            self.state.train_time = self.decision.probe_seconds  # the probe is part of the budget
        # train.nan_check log: the steps' verdicts wait on the device for the next log interval
        self.pending = (PendingVerdicts(self.device, self.state.bad_steps)
                        if nan_check(self.cfg.nan_check, self.device, self.cfg.optimizer) == "log" else None)
        self._open_log()
        self.lr, self.tokens_per_s = learning_rate(self.cfg, self.state.step, 0.0), 0.0
        self.last_val: float | None = None
        self.pruned = False  # set by the loop when the sweep's pruner says so
        self.model.train()
        self._time_before, self._segment_start = self.state.train_time, time.perf_counter()
        self.state.window.started = self._segment_start

    # ---- set-up ------------------------------------------------------------------------------

    def _place(self) -> None:
        """Threads and device."""
        ranks, cfg = self.ranks, self.cfg
        set_threads(cfg.threads or (max(1, (os.cpu_count() or 1) // ranks.local_world) if ranks.enabled else 0))
        self.device = rank_device(resolve_device(cfg.device), ranks.local_rank, ranks.enabled)
        prepare_device(self.device)

    def _auto(self) -> auto.Decision | None:
        """model.size auto: rank 0 probes this machine and chooses (charlm/auto.py); every rank takes
        its choice. With a fixed size and precision auto, only the precision is measured."""
        config, data = self.config, self.data
        precisions = (usable_precisions(self.device) if config.train.precision == "auto"
                      else [resolve_precision(config.train.precision, self.device)])
        sized = config.model.size == "auto"
        if not sized and len(precisions) == 1:
            return None
        self.data.batches(config.train.batch_size, config.train.seq_len, 0, "forward")  # too short a text fails here, not after a probe
        decision = None
        if self.main:
            held_out = data.eval_split(config.train.eval_max_chars)
            text = auto.Text(data.tokens(data.train), data.tokens(held_out) if held_out is not None else 0,
                             len(data.vocab), data.mean_line_length())
            decision = (auto.decide(config, text, self.device, precisions) if sized
                        else auto.decide_precision(config, len(data.vocab), self.device, precisions))
            auto.apply(config, decision)
        settings = self.ranks.broadcast_object(decision.settings if decision else None)
        for key, value in settings.items():
            set_key(config, key, value, "model.size auto")
        return decision

    def _settle(self, resumed: Checkpoint | None) -> None:
        """Precision, this rank's share of the streams, clipping, and each direction's batches."""
        ranks, cfg = self.ranks, self.cfg
        if resumed is not None and cfg.precision == "auto":
            self.precision = resolve_precision(resumed.precision, self.device)  # what the run measured and chose
        else:
            self.precision = resolve_precision(cfg.precision, self.device)
        check_batch(ranks, cfg.batch_size)
        self.rows = ranks.share(cfg.batch_size)
        self.clip_norm = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
        self.streams: dict[str, StreamBatches | LineBatches] = {
            d: self.data.batches(cfg.batch_size, cfg.seq_len, cfg.seed, d) for d in self.directions}
        self.batches = self.streams["forward"]  # both directions share its epoch and window arithmetic

    def _read_data(self, vocab: Vocab | None, resumed: Checkpoint | None) -> None:
        """The text, in the vocabulary the run starts with (None: the text's own), checked against the
        resumed run's."""
        request = self.request
        self.data = RunData.read(request.text, self.config.data, vocab, progress=self.console.wants_bar)
        if resumed is not None and resumed.text.sha256 != self.data.sha256:
            what = "file" if request.text.single_file else "files (one added, changed or removed)"
            raise CharlmError(
                f"{request.text} changed since this run started: resume with the original {what}, or start a"
                f" new run from these weights with --init-from {request.out_dir / 'last.pt'}"
            )
        if self.data.unknown:
            raise CharlmError(f"{request.text} has characters outside the vocabulary ({self.data.unknown})")
        documents = self.data.documents
        if self.main and documents is not None and documents.skipped.summary():
            self.console.say(f"{request.text.name}: {documents.skipped.summary()} (listed in"
                             f" {request.out_dir / 'files.txt'})")
        hint = self.data.list_hint() if self.main and not request.resume else None
        if hint:
            self.console.say(f"hint: {request.text.name} looks like a list ({hint[0]:,} lines, median {hint[1]}"
                             " characters): --set data.mode=lines trains on whole lines")
        self.directions = ("forward", "backward") if self.config.model.bidirectional else ("forward",)

    def _init_source(self) -> tuple[Checkpoint, Vocab]:
        """--init-from: the checkpoint, and its vocabulary grown by the text's new characters (when
        --extend-vocab allows). Its architecture replaces the config's: the weights fix it (dropout
        and the rest stay the user's)."""
        request, data = self.request, self.config.data
        if data.mode == "lines":
            raise CharlmError("--init-from is not available in lines mode: train the list from scratch")
        if request.text.single_file is None:
            raise CharlmError("--init-from fine-tunes on one text file: give a single FILE, not several or a folder")
        own = load_tokens(request.text.single_file, data.encoding, data.cache_dir, progress=self.console.wants_bar)
        source = Checkpoint.load(request.init_from)
        missing = sorted(set(own.vocab.chars) - set(source.vocab.chars))
        if missing and not request.extend_vocab:
            raise CharlmError(
                f"the text has {len(missing)} characters that {request.init_from} never saw: {format_chars(missing)};"
                " add --extend-vocab to give them new embedding rows, or remove them from the text"
            )
        for key in ARCHITECTURE_KEYS:
            setattr(self.config.model, key, getattr(source.config.model, key))
            self.config.explicit.add(f"model.{key}")  # the weights fix them: auto chooses only around them
        return source, source.vocab.extended(missing)

    def _build(self, source: Checkpoint | None) -> None:
        """Model (fresh from the seed, or the source's weights), weight average, optimizer, scaler."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        if source is not None:
            model = CharRNN.from_config(self.config.model, len(source.vocab))
            model.load_state_dict(source.model)
            model.extend_vocab(len(self.data.vocab))
        else:
            model = CharRNN.from_config(self.config.model, len(self.data.vocab))
        self.model = model.to(self.device)
        self.average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if self.ranks.rank > 0:
            torch.manual_seed(cfg.seed + 1000 * self.ranks.rank)  # same weights, different dropout masks
        self.optimizer = build_optimizer(model, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=loss_scaling(self.device, self.precision))
        self.params = [p for p in model.parameters() if p.requires_grad]

    def _restore(self, saved: Checkpoint) -> None:
        """Continue exactly where ``saved`` stopped."""
        self.model.load_state_dict(saved.raw_model if saved.raw_model is not None else saved.model)
        if self.average is not None:
            self.average.load(self.model, saved.model, saved.ema_updates)
        self.optimizer.load_state_dict(saved.optimizer)
        restore_scaler(self.scaler, saved.scaler)
        self.state = saved.state.on_rank(self.directions, self.rows, self.device)
        ranks, per_rank = self.ranks, saved.rng_ranks
        restore_rng_states(per_rank[ranks.rank] if per_rank and len(per_rank) == ranks.world else saved.rng)
        state = self.state
        spent = stop_reason(self.cfg, state.step, state.step / self.batches.steps_per_epoch, state.train_time)
        if spent:
            value = getattr(self.cfg, spent)
            shown = format_duration(value) if spent == "max_time" else f"{value:g}"
            raise CharlmError(
                f"{self.request.out_dir} has already used its budget (train.{spent} = {shown}) at step"
                f" {state.step:,}: give a larger --{spent.replace('_', '-')} to train further"
            )
        if self.main:
            truncate_metrics(self.request.out_dir / "metrics.jsonl", state.step)

    def _open_log(self) -> None:
        """config.yaml, metrics.jsonl and TensorBoard (rank 0), the start event and line, the bar."""
        out_dir, data, step = self.request.out_dir, self.data, self.state.step
        if self.main:
            atomic_write_text(out_dir / "config.yaml", self.config.to_yaml(f"resolved configuration of this run"
                                                                           f" (charlm {__version__})"))
            if data.documents is not None:
                atomic_write_text(out_dir / "files.txt", data.documents.manifest())
        self.log = RunLog(out_dir, purge_from=step + 1 if self.request.resume else None) if self.main else NullLog()
        lines = data.mode == "lines"
        self.log.event(
            "start", step, resumed=self.request.resume, device=str(self.device), precision=self.precision,
            vocab_size=len(data.vocab), parameters=self.model.num_parameters(),
            **{f"train_{data.unit}": len(data.train), f"val_{data.unit}": len(data.val)},
            **({"held_out_duplicates": data.duplicates} if lines else {}),
            **({"files": data.split_counts()} if data.documents is not None else {}),
            steps_per_epoch=self.batches.steps_per_epoch, charlm_version=__version__,
        )
        if self.decision is not None:
            self.log.event("probe", step, **self.decision.event())
        self.console.show_bar()
        m = self.config.model
        self.console.say(
            f"{self.request.text.name}: {data.describe_files()}{len(data.train):,} train / {len(data.val):,} val {data.unit},"
            f" {len(data.vocab)} symbols"
            + (f" ({data.duplicates:,} held-out lines also in train)" if lines and data.duplicates else "")
            + f" | {m.num_layers}x{m.hidden_size} {m.cell}, {self.model.num_parameters() / 1e6:.2f}M params"
            f" | {self.device.type} {self.precision}, {torch.get_num_threads()} threads | {out_dir}"
            + (f" | resuming at step {step:,}" if self.request.resume else "")
        )

    # ---- the loop's questions --------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds of training so far, resumes included."""
        return self._time_before + (time.perf_counter() - self._segment_start)

    def progress(self) -> float:
        """Share of the budget used (0 to 1)."""
        state = self.state
        return budget_progress(self.cfg, state.step, state.step / self.batches.steps_per_epoch, state.train_time)

    def should_stop(self, requested: str | None) -> str | None:
        """Why the loop must stop before the next step (None: go on); ``requested`` is a signal's name.
        Under torchrun every rank must stop at the same step and follow the same clock, so the ranks agree:
        every log_interval steps (a collective every step would stall the GPUs), and at a step or epoch
        budget's end, which every rank reaches at the same step."""
        state, cfg = self.state, self.cfg
        state.train_time = self.elapsed()
        reason = (stop_reason(cfg, state.step, state.step / self.batches.steps_per_epoch, state.train_time)
                  or ("interrupted" if requested else None)
                  or ("pruned" if self.pruned else None)
                  or ("early_stopping" if cfg.patience and state.evals_since_best >= cfg.patience else None))
        if self.ranks.enabled and state.step % cfg.log_interval and reason not in ("max_steps", "max_epochs"):
            return None  # the clock, a signal or the pruner wait for the next agreement
        code, state.train_time = self.ranks.agree(STOP_CODES.index(reason), state.train_time)
        return STOP_CODES[code]

    def batch(self) -> Batch:
        """This step's batch, a function of the step alone: each direction's inputs and targets, this
        rank's streams, on the device. (The cutting itself: ``StreamBatches.batch``, ``LineBatches.batch``.)"""
        batch = {}
        for direction, stream in self.streams.items():
            inputs, targets = stream.batch(self.state.step)
            batch[direction] = (self._to_device(inputs[self.rows]), self._to_device(targets[self.rows]))
        return batch

    def _to_device(self, array: "np.ndarray") -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()  # only a copy from page-locked memory overlaps the GPU's work
        return tensor.to(self.device, non_blocking=True)

    # ---- a step ------------------------------------------------------------------------------

    def step(self, batch: Batch) -> Outcome:
        """One update from ``batch``; a NaN or Inf loss or gradient skips it instead (judged here, or
        with train.nan_check log on the device: ``_step_on_device``, read later by ``settle``)."""
        state = self.state
        if self.data.mode == "lines" or self.batches.position(state.step)[1] == 0:
            state.reset_carried()  # the streams wrap around (the old state is other text), or every line starts afresh
        self.lr = learning_rate(self.cfg, state.step, self.progress())
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        losses = self.forward(batch)
        # The mean of the directions' losses; with one direction, that loss itself (the same numbers,
        # two autograd nodes fewer).
        loss = losses["forward"] if len(losses) == 1 else torch.stack(list(losses.values())).mean()
        loss = self.backward(loss)
        grad_norm = self.clip()
        state.step += 1
        state.tokens_seen += self.batches.tokens_per_step
        state.window.steps += 1
        if self.pending is not None:
            return self._step_on_device(losses, loss, grad_norm)
        # The one sync per step: a NaN or Inf has to be caught before the update reaches the weights.
        loss_ok, grads_ok = torch.isfinite(torch.stack([loss.detach(), grad_norm.detach().float()])).tolist()
        if not loss_ok or not (grads_ok or self.scaler.is_enabled()):
            return self._skip(loss, grad_norm)
        state.bad_steps = 0
        self.scaler.step(self.optimizer)  # with a loss scale, skips the update itself when a gradient overflowed
        self.scaler.update()
        state.carried = {direction: detach_state(carried) for direction, carried in state.carried.items()}
        if not grads_ok:
            state.overflow_steps += 1
            return Outcome.OVERFLOW  # not a fault: the scale was too high; nothing of it is averaged or logged
        if self.average is not None:
            self.average.update()
        state.window.add(losses, grad_norm, self.clip_norm)
        return Outcome.GOOD

    def _step_on_device(self, losses: dict[str, torch.Tensor], loss: torch.Tensor, grad_norm: torch.Tensor) -> Outcome:
        """``step``'s checks with nothing read back (train.nan_check log): the fused AdamW skips its whole
        update where the step was not finite (``found_inf``, as GradScaler passes it), a bad step's
        carried state becomes zeros (what None starts from), the window and the weight average leave it
        out, and ``settle`` reads what happened at the next log interval. The weights come out the same."""
        state = self.state
        finite_loss, finite_grads = torch.isfinite(loss.detach()), torch.isfinite(grad_norm.detach())
        good = finite_loss & finite_grads
        bad = ~finite_loss if self.scaler.is_enabled() else ~good  # with a loss scale, an inf gradient alone is overflow
        self.optimizer.found_inf, self.optimizer.grad_scale = (~good).float(), None  # gradients are unscaled already
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf, self.optimizer.grad_scale
        self.scaler.update()
        state.carried = {d: None if carried is None else tuple(torch.where(bad, 0.0, t.detach()) for t in carried)
                         for d, carried in state.carried.items()}
        if self.average is not None:
            self.average.update(good)
        state.window.add(losses, grad_norm, self.clip_norm, good)
        self.pending.add(bad, ~good & ~bad, state.step, loss, grad_norm)
        return Outcome.GOOD  # as far as the host knows: settle() has the verdict

    def settle(self) -> Outcome:
        """Take the device's verdicts since the last read into the state (train.nan_check log; with step
        each step did so itself): the counts, one ``skip`` event and warning for the window's bad steps,
        and DIVERGED once train.max_bad_steps came in a row. One read from the device."""
        state, limit = self.state, self.cfg.max_bad_steps
        if self.pending is not None:
            verdicts = self.pending.read()
            state.skipped_steps += verdicts.skipped
            state.overflow_steps += verdicts.overflows
            # bad_steps is the run now, except that a run which reached the limit (in this window or, found
            # by a checkpoint's read, in an earlier one) stands: that is the divergence the loop stops for.
            reached = max(verdicts.longest_run, state.bad_steps if state.bad_steps >= limit else 0)
            state.bad_steps = reached if reached >= limit else verdicts.run
            if verdicts.skipped:
                self._report_skips(verdicts)
        return Outcome.DIVERGED if state.bad_steps >= limit else Outcome.GOOD

    def _report_skips(self, verdicts: Verdicts) -> None:
        self.log.event("skip", verdicts.last_step, skipped=verdicts.skipped, bad_steps=verdicts.longest_run,
                       loss=verdicts.last_loss, grad_norm=verdicts.last_grad_norm)
        self.console.say(f"warning: {verdicts.skipped} step(s) up to step {verdicts.last_step:,} had a NaN or"
                         f" infinite loss or gradient; skipped their updates (at most {verdicts.longest_run} in"
                         f" a row; {self.cfg.max_bad_steps} in a row stop training)")

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each direction's mean loss on its part of ``batch``, carrying its state on. The LSTM runs in
        here, inside ``CharRNN.forward``."""
        losses = {}
        for direction, (inputs, targets) in batch.items():
            with autocast(self.device, self.precision):
                logits, self.state.carried[direction] = self.model(inputs, self.state.carried[direction],
                                                                   direction=direction)
            losses[direction] = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        return losses

    def backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Gradients of ``loss`` (unscaled where the loss was scaled); under torchrun the mean gradient
        and loss of the whole batch, as one process would have them. Returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.ranks.enabled:
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            loss = self.ranks.average([p.grad for p in self.params], loss)
        # After the all-reduce: every rank then sees the same overflow and skips the same step (one
        # rank's own finite gradients must not let it step on another's inf).
        self.scaler.unscale_(self.optimizer)
        return loss

    def clip(self) -> torch.Tensor:
        """Clip by value (if set), then by global norm; return the norm before norm clipping."""
        cfg, step = self.cfg, self.state.step
        if cfg.clip_value > 0:
            torch.nn.utils.clip_grad_value_(self.params, cfg.clip_value)
        if self.main and cfg.log_layer_grads and (step + 1) % cfg.log_interval == 0:
            self.log.event("grads", step + 1, **layer_grad_norms(self.model))  # before clipping: what backprop gave
        return torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm, foreach=fused_kernels(self.device))

    def _skip(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> Outcome:
        state = self.state
        state.bad_steps += 1
        state.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()
        state.reset_carried()  # a state that met a NaN would poison every later window
        self.log.event("skip", state.step, bad_steps=state.bad_steps, loss=loss.item(), grad_norm=grad_norm.item())
        self.console.say(f"warning: step {state.step:,}: the loss or a gradient is NaN or infinite; skipped this"
                         f" update ({state.bad_steps} in a row; {self.cfg.max_bad_steps} in a row stop training)")
        return Outcome.DIVERGED if state.bad_steps >= self.cfg.max_bad_steps else Outcome.SKIPPED

    # ---- logs, evaluations, checkpoints ----------------------------------------------------------

    def log_window(self) -> None:
        """The window's averages as a ``train`` event (one read from the device), the bar moved on."""
        state, window = self.state, self.state.window
        elapsed = time.perf_counter() - window.started
        totals = dict(zip(window.sums, (self.ranks.sum(torch.stack(list(window.sums.values()))) / self.ranks.world).tolist()))
        good_steps = totals.pop("good_steps")
        per_step = 1 / good_steps if good_steps else math.nan  # a window of only skipped steps has none
        means = {name: total * per_step for name, total in totals.items()}
        loss = means["loss_forward"]
        both = {f"loss_{d}": means[f"loss_{d}"] for d in self.directions} if len(self.directions) > 1 else {}
        self.tokens_per_s = len(self.directions) * window.steps * self.batches.tokens_per_step / max(elapsed, 1e-9)
        self.log.event(
            "train", state.step, loss=loss, bpc=loss / math.log(2), lr=self.lr, **both, grad_norm=means["grad_norm"],
            clip_share=means["clipped"], tokens_per_s=self.tokens_per_s, tokens=state.tokens_seen,
            time=state.train_time, epoch=state.step / self.batches.steps_per_epoch,
        )
        val = f" val {self.last_val:.3f}" if self.last_val is not None else ""
        self.console.progress(self.progress(), f"step {state.step:,} loss {loss:.3f}{val}"
                                               f" {self.tokens_per_s / 1000:.1f}k tok/s")
        window.reset()

    def averaged(self) -> contextlib.AbstractContextManager:
        """Evaluate, sample and publish the averaged weights when train.ema_decay is on."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def evaluate(self) -> float | None:
        """The val loss (rank 0 evaluates; every rank gets the result and keeps the same best and
        patience); best.pt when it improves. None when there is too little held out."""
        val = self.data.eval_split(self.cfg.eval_max_chars)
        if val is None:
            self.last_val = None
            return None
        with self.averaged():
            results = (evaluate_directions(self.model, val, self.cfg.eval_batch_size, self.device, self.precision,
                                           self.data.vocab.marker) if self.main else {})
            sample = self._preview() if self.main and self.cfg.sample_length else None
        objective = self.ranks.broadcast(sum(r.loss for r in results.values()) / len(results) if self.main else None)
        improved = self.state.record_eval(objective)
        if improved:
            self.save("best.pt")
        if self.main:
            self._report_eval(results, sample, improved)
        self.last_val = results["forward"].loss if self.main else objective
        return self.last_val

    def _preview(self) -> str:
        text = preview(Sampler(self.model, self.data.vocab), self.config.sample, self.cfg.sample_length,
                       seed=self.state.step, lines=PREVIEW_LINES)
        self.model.train()  # generating put it in eval mode
        return text

    def _report_eval(self, results: dict[str, EvalResult], sample: str | None, improved: bool) -> None:
        state, result = self.state, results["forward"]
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

    def checkpoint(self) -> Checkpoint:
        """The run as it stands. A collective under torchrun: it gathers every rank's streams."""
        with self.averaged():
            published = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        state = self.state.gathered(self.ranks)
        rng = rng_states()
        return Checkpoint(
            config=self.config, vocab=self.data.vocab, parameters=self.model.num_parameters(),
            precision=self.precision, text=TextRecord(str(self.request.text), self.data.sha256, self.data.split_counts()),
            model=published, state=state, optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
            rng=rng, rng_ranks=self.ranks.gather_objects(rng) if self.ranks.enabled else None,
            raw_model=self.model.state_dict() if self.average is not None else None,
            ema_updates=self.average.updates if self.average is not None else 0,
        )

    def save(self, name: str) -> None:
        """Write ``name`` (last.pt, best.pt) in the run directory; every rank takes part, rank 0 writes.
        Not after a divergence the pending verdicts reveal (the loop stops at its next check)."""
        if self.settle() is Outcome.DIVERGED:
            return
        checkpoint = self.checkpoint()
        if self.main:
            checkpoint.save(self.request.out_dir / name)

    # ---- wrap-up ---------------------------------------------------------------------------------

    def finish(self, reason: str | None) -> TrainResult:
        """A last evaluation and last.pt (after a divergence neither: the last good checkpoint stays),
        the end event; a divergence is an error."""
        state = self.state
        state.train_time = self.elapsed()
        if self.settle() is Outcome.DIVERGED:
            reason = "diverged"
        if reason != "diverged":
            # An interrupted run stops at once and without the extra evaluation, so that pausing and
            # resuming gives exactly the run that was never paused.
            if state.step % self.cfg.eval_interval != 0 and reason != "interrupted":
                self.evaluate()
            self.save("last.pt")
        self.console.progress(self.progress())
        self.console.close()
        self.log.event("end", state.step, reason=reason, time=state.train_time, best_val_loss=state.best_val_loss,
                       last_val_loss=self.last_val, tokens=state.tokens_seen, skipped_steps=state.skipped_steps,
                       overflow_steps=state.overflow_steps)
        self.log.close()
        if reason == "diverged":
            raise CharlmError(self._divergence())
        return TrainResult(out_dir=self.request.out_dir, step=state.step, stop_reason=reason or "done",
                           best_val_loss=state.best_val_loss, last_val_loss=self.last_val, train_time=state.train_time,
                           tokens_per_s=self.tokens_per_s, parameters=self.model.num_parameters())

    def _divergence(self) -> str:
        cfg, out_dir = self.cfg, self.request.out_dir
        clip = (f"lower train.clip_norm (now {cfg.clip_norm:g})" if cfg.clip_norm > 0
                else "turn on train.clip_norm (e.g. 1.0)")
        try:
            path, kept = newest_checkpoint(out_dir)
            left = f"{path} (step {kept.step:,}) is kept"
        except CharlmError:
            left = "no checkpoint had been written yet"
        return (f"training stopped at step {self.state.step:,}: {self.state.bad_steps} steps in a row had a NaN or"
                f" infinite loss or gradient (exploding gradients); lower train.lr (now {cfg.lr:g}) or {clip}, then"
                f" resume or start again; {left}")


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


def layer_grad_norms(model: CharRNN) -> dict[str, float]:
    """The gradient norm of each layer's parameters (see ``CharRNN.layer_groups``)."""
    norms = {}
    for group, parameters in model.layer_groups().items():
        grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
        if grads:
            norms[group] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    return norms
