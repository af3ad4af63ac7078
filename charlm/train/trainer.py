"""What is done to a ``Run`` (charlm/train/setup.py): a step, an evaluation, a checkpoint.

Where a step happens: ``Trainer.step``. Forward over each direction's batch from its carried state
(truncated BPTT), backward, one all-reduce under torchrun, clipping, then the update unless the
device judged the step not finite (charlm/train/verdict.py). The loop that asks for steps, evaluations
and checkpoints, readable in one screen, is ``charlm.train.fit``; what a run says and logs is
worded in charlm/train/report.py.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from charlm.data.lines import IGNORE
from charlm.evaluate import evaluate_directions
from charlm.generate.sample import Sampler
from charlm.model.network import CharRNN, Reading
from charlm.runtime import autocast, fused_kernels, nan_check, step_unless
from charlm.train.checkpoint import Checkpoint, TextRecord
from charlm.train.parts import Run
from charlm.train.report import Report
from charlm.train.schedule import budget_progress, cooling_down, learning_rate
from charlm.train.verdict import PendingVerdicts, judge, settle

PREVIEW_LINES = 8  # lines mode: lines in the sample logged at each evaluation

Tensors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # direction -> (inputs, targets), on the device


class Trainer:
    """Steps, evaluates and saves one run; ``report`` says what happened."""

    def __init__(self, run: Run, report: Report):
        self.run, self.report = run, report
        train = run.train
        self.clip_norm = train.clip_norm if train.clip_norm > 0 else math.inf
        self.params = [p for p in run.model.parameters() if p.requires_grad]
        self.verdicts = PendingVerdicts(run.device, run.state.bad_steps)
        # The host reads the verdicts every step, or (train.nan_check log) only at log intervals.
        self.verdict_interval = train.log_interval if nan_check(train.nan_check, run.device,
                                                                train.optimizer) == "log" else 1
        self.lr, self.tokens_per_s, self.last_val = learning_rate(train, run.state.step, 0.0), 0.0, None
        self.time_before, self.started = run.state.train_time, time.perf_counter()
        self.cooling = cooling_down(train, self.progress())  # resumed within a wsd cool-down: no second stable.pt
        run.window.started = self.started
        run.model.train()

    # ---- the clock and the budget -----------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds of training so far, resumes included."""
        return self.time_before + (time.perf_counter() - self.started)

    def progress(self) -> float:
        """Share of the budget used (0 to 1)."""
        state = self.run.state
        return budget_progress(self.run.train, state.step, self.epoch(), state.train_time)

    def epoch(self) -> float:
        return self.run.state.step / self.run.batches["forward"].steps_per_epoch

    # ---- a step -----------------------------------------------------------------------------------

    def batch(self) -> Tensors:
        """This step's batch, a function of the step alone: each direction's inputs and targets, this
        rank's streams, on the device. (The cutting itself: ``StreamBatches.batch``, ``LineBatches.batch``.)"""
        run = self.run
        batch = {}
        for direction, batches in run.batches.items():
            inputs, targets = batches.batch(run.state.step)
            batch[direction] = (self._to_device(inputs[run.rows]), self._to_device(targets[run.rows]))
        return batch

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.run.device.type == "cuda":
            tensor = tensor.pin_memory()  # only a copy from page-locked memory overlaps the GPU's work
        return tensor.to(self.run.device, non_blocking=True)

    def step(self, batch: Tensors) -> None:
        """One update from ``batch``, or none where the loss or a gradient is NaN or infinite (the
        device's verdict, read by ``read_verdicts``)."""
        run, state = self.run, self.run.state
        if run.batches["forward"].starts_fresh(state.step):
            run.streams.reset()  # the streams wrap around (the old state is other text), or every line starts afresh
        progress = self.progress()
        self.watch_cooldown(progress)
        self.lr = learning_rate(run.train, state.step, progress, self.cooling)
        for group in run.optimizer.param_groups:
            group["lr"] = self.lr
        losses, penalty = self.forward(batch)
        # The mean of the directions' losses; with one direction, that loss itself (the same numbers,
        # two autograd nodes fewer).
        loss = losses["forward"] if len(losses) == 1 else torch.stack(list(losses.values())).mean()
        loss = self.backward(loss if penalty is None else loss + penalty)
        grad_norm = self.clip()
        state.step += 1
        state.tokens_seen += run.batches["forward"].tokens_per_step
        run.window.steps += 1
        verdict = judge(loss, grad_norm, scaled=run.scaler.is_enabled())
        step_unless(run.optimizer, ~verdict.good)
        run.scaler.update()
        run.streams.carry(verdict.bad)
        run.average.update(verdict.good)
        run.window.add(losses, grad_norm, self.clip_norm, verdict.good)
        self.verdicts.add(verdict, state.step, loss, grad_norm)

    def watch_cooldown(self, progress: float) -> None:
        """At the first step of a wsd run's cool-down, stable.pt keeps the run as it stands, so that a
        longer budget can go on from it (``charlm.train.setup``). Under torchrun with a time budget the
        ranks agree on the clock only every log interval: the cool-down begins at one of those steps."""
        run = self.run
        if self.cooling or not cooling_down(run.train, progress):
            return
        if run.ranks.enabled and run.train.max_time is not None and run.state.step % run.train.log_interval:
            return
        self.save("stable.pt")
        self.cooling = True

    def forward(self, batch: Tensors) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Each direction's mean loss on its part of ``batch``, carrying its state on, and the mean of
        the directions' activation penalties (None where ``train.ar`` and ``train.tar`` are 0). The LSTM
        runs in here, inside ``CharRNN.read``."""
        run, losses, penalties = self.run, {}, []
        train, carried = run.train, run.streams.carried
        for direction, (inputs, targets) in batch.items():
            with autocast(run.device, run.precision):
                reading = run.model.read(inputs, carried[direction], direction=direction)
            carried[direction] = reading.state
            losses[direction] = F.cross_entropy(reading.logits.float().flatten(0, 1), targets.flatten(),
                                                ignore_index=IGNORE)
            if train.ar or train.tar:
                penalties.append(activation_penalty(reading, targets, train.ar, train.tar))
        return losses, (torch.stack(penalties).mean() if penalties else None)

    def backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Gradients of ``loss`` (unscaled where the loss was scaled); under torchrun the mean gradient
        and loss of the whole batch, as one process would have them. Returns the loss."""
        run = self.run
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if run.ranks.enabled:
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            loss = run.ranks.average([p.grad for p in self.params], loss)
        # After the all-reduce: every rank then sees the same overflow and skips the same step (one
        # rank's own finite gradients must not let it step on another's inf).
        run.scaler.unscale_(run.optimizer)
        return loss

    def clip(self) -> torch.Tensor:
        """Clip by value (if set), then by global norm; return the norm before norm clipping."""
        train, step = self.run.train, self.run.state.step
        if train.clip_value > 0:
            torch.nn.utils.clip_grad_value_(self.params, train.clip_value)
        if self.run.ranks.is_main and train.log_layer_grads and (step + 1) % train.log_interval == 0:
            self.report.grads(step + 1, layer_grad_norms(self.run.model))  # before clipping: what backprop gave
        return torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm, foreach=fused_kernels(self.run.device))

    def read_verdicts(self) -> bool:
        """Take the device's verdicts since the last read into the run's counters (one read from the
        device), with a warning for bad steps; True once the run has diverged."""
        run = self.run
        verdicts = self.verdicts.read()
        diverged = settle(run.state, verdicts, run.train.max_bad_steps)
        if verdicts.skipped:
            self.report.skips(verdicts, run.train.max_bad_steps)
        return diverged

    # ---- logs, evaluations, checkpoints --------------------------------------------------------------

    def log_window(self) -> None:
        """The window's averages as a ``train`` event (one read from the device), the bar moved on."""
        run = self.run
        window = run.window
        totals = window.totals()
        good_steps = totals.pop("good_steps")
        per_step = 1 / good_steps if good_steps else math.nan  # a window of only skipped steps has none
        means = {name: total * per_step for name, total in totals.items()}
        elapsed = time.perf_counter() - window.started
        self.tokens_per_s = len(run.directions) * window.steps * run.batches["forward"].tokens_per_step / max(elapsed,
                                                                                                              1e-9)
        self.report.window(run.state, means, run.directions, self.lr, self.tokens_per_s, self.epoch(),
                           self.progress(), self.last_val)
        window.reset()

    def evaluate(self) -> float | None:
        """The forward val loss (rank 0 evaluates; every rank gets the same numbers and keeps the same
        best and patience); best.pt when the objective, the mean of the directions, improves. None
        when there is too little held out."""
        run = self.run
        part = run.data.eval_part(run.train.eval_max_chars)
        if part is None:
            self.last_val = None
            return None
        main = run.ranks.is_main
        with run.average.applied():
            results = (evaluate_directions(run.model, part, run.train.eval_batch_size, run.device, run.precision)
                       if main else {})
            sample = self._preview() if main and run.train.sample_length else None
        objective = run.ranks.broadcast(sum(r.loss for r in results.values()) / len(results) if main else None)
        self.last_val = run.ranks.broadcast(results["forward"].loss if main else None)
        improved = run.state.record_eval(objective)
        if improved:
            self.save("best.pt")
        self.report.evaluation(run.state, results, sample, improved)
        return self.last_val

    def _preview(self) -> str:
        run = self.run
        sampler = Sampler(run.model, run.data.vocab, type(run.data))
        text = sampler.preview(run.config.sample, run.train.sample_length, seed=run.state.step, lines=PREVIEW_LINES)
        run.model.train()  # generating put it in eval mode
        return text

    def checkpoint(self) -> Checkpoint:
        """The run as it stands. A collective under torchrun: it gathers every rank's streams."""
        run = self.run
        source = run.request.text
        text = TextRecord(str(source), run.data.sha256, run.data.tokens.counts(), source.absolute().to_dict())
        return Checkpoint(config=run.config, vocab=run.data.vocab, parameters=run.model.num_parameters(),
                          precision=run.precision, text=text, parts=run.state_dict())

    def save(self, name: str) -> None:
        """Write ``name`` (last.pt, best.pt, stable.pt) in the run directory; every rank takes part, rank 0 writes.
        Not after a divergence the verdicts not yet read reveal (the loop stops at its next check)."""
        if self.read_verdicts():
            return
        checkpoint = self.checkpoint()
        if self.run.ranks.is_main:
            checkpoint.save(self.run.request.out_dir / name)


def activation_penalty(reading: Reading, targets: torch.Tensor, ar: float, tar: float) -> torch.Tensor:
    """AWD-LSTM's activation regularisation: ``ar`` x the mean square of the top layer's output after
    dropout, plus ``tar`` x the mean square of its change from one character to the next (before
    dropout, within the window); padding (lines mode) left out."""
    real = (targets != IGNORE).unsqueeze(-1).float()  # (batch, time, 1)
    width = reading.output.shape[-1]
    penalty = torch.zeros((), device=targets.device)
    if ar:
        squares = reading.dropped.float().pow(2) * real
        penalty = penalty + ar * squares.sum() / (real.sum() * width).clamp(min=1)
    if tar:
        pairs = real[:, 1:] * real[:, :-1]
        change = (reading.output[:, 1:] - reading.output[:, :-1]).float().pow(2) * pairs
        penalty = penalty + tar * change.sum() / (pairs.sum() * width).clamp(min=1)
    return penalty


def layer_grad_norms(model: CharRNN) -> dict[str, float]:
    """The gradient norm of each layer's parameters (see ``CharRNN.layer_groups``)."""
    norms = {}
    for group, parameters in model.layer_groups().items():
        grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
        if grads:
            norms[group] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    return norms
