"""The training loop: truncated BPTT with carried state, clipping, mixed precision, eval, checkpoints.

``train()`` reads top to bottom: set up (data, model, optimizer, maybe restore), then one loop of
steps, then the final evaluation and checkpoint. Nothing in the hot loop waits for the device
except every ``log_interval`` steps, when the accumulated loss is read once.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from charlm import __version__, distributed
from charlm.averaging import WeightAverage
from charlm.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from charlm.config import Config, TrainConfig, format_duration
from charlm.data import StreamBatches, TokenFile, Vocab, format_chars, load_tokens, split_tokens
from charlm.errors import CharlmError
from charlm.evaluate import evaluate_directions
from charlm.fsutil import atomic_write_text, describe_os_error
from charlm.lines import IGNORE, LineBatches, lines_vocab, looks_like_a_list, split_into_lines, split_lines
from charlm.logs import NullLog, RunLog, truncate_metrics
from charlm.model import CharRNN, State, detach_state
from charlm.rundir import RunLock, check_fresh, newest_checkpoint, remove_if_only_lock
from charlm.runtime import autocast, resolve_device, resolve_precision, set_threads
from charlm.sample import generate, make_generator, start_tokens

ARCHITECTURE_KEYS = ("cell", "hidden_size", "embedding_size", "num_layers", "tie_weights", "bidirectional")
STATE_KEYS = {"forward": "carried_state", "backward": "carried_state_backward"}  # checkpoint keys
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


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Learning rate at ``step``; ``progress`` in [0, 1] is the share of the budget used."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        ratio = config.min_lr_ratio
        return config.lr * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
    if config.lr_schedule == "step":
        return config.lr * config.lr_decay_rate ** (step // config.lr_decay_every)
    return config.lr


def budget_progress(config: TrainConfig, step: int, epochs: float, seconds: float) -> float:
    """Share of the training budget used: the largest share of whichever limits are set."""
    shares = [0.0]
    if config.max_steps:
        shares.append(step / config.max_steps)
    if config.max_epochs:
        shares.append(epochs / config.max_epochs)
    if config.max_time:
        shares.append(seconds / config.max_time)
    return max(shares)


def stop_reason(config: TrainConfig, step: int, epochs: float, seconds: float) -> str | None:
    if config.max_steps is not None and step >= config.max_steps:
        return "max_steps"
    if config.max_epochs is not None and epochs >= config.max_epochs:
        return "max_epochs"
    if config.max_time is not None and seconds >= config.max_time:
        return "max_time"
    return None


def build_optimizer(model: CharRNN, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (default), SGD with momentum or RMSprop; weight decay only on matrices."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        # The fused kernel does the whole update in one pass; torch has it on CUDA and CPU.
        fused = device.type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=config.beta2)


def sample_text(model: CharRNN, vocab: Vocab, config: Config, length: int, seed: int) -> str:
    """A short sample for the logs, drawn with the config's sampling settings (lines mode: 8 lines)."""
    prime = config.sample.prime if not vocab.missing(config.sample.prime) else ""
    options = {"temperature": config.sample.temperature, "top_k": config.sample.top_k, "top_p": config.sample.top_p}
    if vocab.marker is not None:
        from charlm.api import LanguageModel

        lines = LanguageModel(model, vocab, config, {}, Path()).sample_lines(8, prime, length, seed=seed, **options)
        model.train()
        return "\n".join(lines)
    ids = generate(model, start_tokens(vocab, prime), length, 1, generator=make_generator(seed), **options)
    text = prime + vocab.decode([int(step_ids[0]) for step_ids in ids])
    model.train()
    return text


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


def _init_from(config: Config, tokens_vocab: Vocab, init_path: str, extend_vocab: bool) -> tuple[dict, Vocab]:
    source = load_checkpoint(init_path)
    vocab = Vocab(source["vocab"])
    missing = sorted(set(tokens_vocab.chars) - set(vocab.chars))
    if missing and not extend_vocab:
        raise CharlmError(
            f"the text has {len(missing)} characters that {init_path} never saw: {format_chars(missing)};"
            " add --extend-vocab to give them new embedding rows, or remove them from the text"
        )
    for key in ARCHITECTURE_KEYS:  # the weights fix the architecture; dropout stays the user's
        setattr(config.model, key, source["config"]["model"][key])
    return source, vocab.extended(missing)


def _make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(describe_os_error(exc, out_dir, "create the run directory")) from None


def train(
    config: Config,
    text_path: Path,
    out_dir: Path,
    resume: bool = False,
    init_from: str | None = None,
    extend_vocab: bool = False,
    progress: bool = True,
    on_eval: Callable[[int, float], bool] | None = None,
) -> TrainResult:
    """Train a model on ``text_path`` as ``config`` says, writing everything to ``out_dir``.

    ``resume`` continues the run in ``out_dir`` from its newest checkpoint, exactly where it was.
    ``on_eval(step, val_loss)`` is called after each evaluation; returning True stops the run
    (reason "pruned"): this is how a sweep stops hopeless trials early.
    """
    if not config.data.path and not config.data.corpus:
        config = copy.deepcopy(config)
        config.data.path = str(text_path)  # recorded, so that `charlm train --resume DIR` finds the text
    ranks = distributed.setup(config.train.device)
    finished = False
    try:
        result = _train_as_rank(config, text_path, out_dir, resume, init_from, extend_vocab, progress, on_eval, ranks)
        finished = True
        return result
    finally:
        ranks.close(finished)


def _train_as_rank(config: Config, text_path: Path, out_dir: Path, resume: bool, init_from: str | None,
                   extend_vocab: bool, progress: bool, on_eval: Callable[[int, float], bool] | None,
                   ranks: distributed.Distributed) -> TrainResult:
    if not ranks.is_main:  # under torchrun, rank 0 alone creates, locks and writes the run directory
        return _train(config, text_path, out_dir, resume, init_from, extend_vocab, False, None, ranks)
    created = not out_dir.exists()
    _make_out_dir(out_dir)
    try:
        with RunLock(out_dir):  # one writer per run directory
            if not resume:
                check_fresh(out_dir)
            return _train(config, text_path, out_dir, resume, init_from, extend_vocab, progress, on_eval, ranks)
    except CharlmError:
        if created:  # a run that failed before writing anything leaves no directory behind
            remove_if_only_lock(out_dir)
        raise


def _train(config: Config, text_path: Path, out_dir: Path, resume: bool, init_from: str | None,
           extend_vocab: bool, progress: bool, on_eval: Callable[[int, float], bool] | None,
           ranks: distributed.Distributed) -> TrainResult:
    train_cfg = config.train
    main = ranks.is_main  # the one process that logs and writes checkpoints
    set_threads(train_cfg.threads or (max(1, (os.cpu_count() or 1) // ranks.local_world) if ranks.enabled else 0))
    distributed.check_batch(ranks, train_cfg.batch_size)
    rows = ranks.share(train_cfg.batch_size)  # this process's streams
    device = resolve_device(train_cfg.device)
    precision = resolve_precision(train_cfg.precision, device)

    # ---- data -----------------------------------------------------------------------------
    checkpoint: dict[str, Any] | None = None
    init_source: dict[str, Any] | None = None
    vocab: Vocab | None = None
    lines_mode = config.data.mode == "lines"
    if resume:
        _, checkpoint = newest_checkpoint(out_dir)
        vocab = Vocab(checkpoint["vocab"])
    elif init_from:
        if lines_mode:
            raise CharlmError("--init-from is not available in lines mode: train the list from scratch")
        own = load_tokens(text_path, config.data.encoding, config.data.cache_dir, progress=progress)
        init_source, vocab = _init_from(config, own.vocab, init_from, extend_vocab)
    # Lines mode reads the text's own token stream and cuts it into lines with its own vocabulary.
    token_file: TokenFile = load_tokens(
        text_path, config.data.encoding, config.data.cache_dir, vocab=None if lines_mode else vocab,
        progress=progress,
    )
    if checkpoint is not None and checkpoint["data"]["sha256"] != token_file.sha256:
        raise CharlmError(
            f"{text_path} changed since this run started: resume with the original file, or start a new"
            f" run from these weights with --init-from {out_dir / 'last.pt'}"
        )
    if token_file.unknown:
        raise CharlmError(f"{text_path} has characters outside the vocabulary ({token_file.unknown})")
    if lines_mode:
        vocab = vocab or lines_vocab(token_file.vocab)
        line_splits = split_lines(split_into_lines(token_file.tokens, token_file.vocab, vocab),
                                  config.data.val_fraction, config.data.test_fraction, config.data.split_seed,
                                  config.data.holdout_cap)
        train_part, val_part, unit = line_splits.train, line_splits.val, "lines"
        streams = {direction: LineBatches(train_part, train_cfg.batch_size, vocab.marker, train_cfg.seed,
                                          reverse=direction == "backward")
                   for direction in (("forward", "backward") if config.model.bidirectional else ("forward",))}
    else:
        vocab = token_file.vocab
        list_like = looks_like_a_list(token_file.tokens, vocab) if main and not resume else None
        if list_like:
            tqdm.write(f"hint: {text_path.name} looks like a list ({list_like[0]:,} lines, median {list_like[1]}"
                       " characters): --set data.mode=lines trains on whole lines", file=sys.stderr)
        splits = split_tokens(token_file.tokens, config.data.val_fraction, config.data.test_fraction)
        train_part, val_part, unit = splits.train, splits.val, "chars"
        streams = {"forward": StreamBatches(train_part, train_cfg.batch_size, train_cfg.seq_len, train_cfg.seed)}
        if config.model.bidirectional:
            # The backward direction reads the training text reversed: its streams run from the end of
            # the text towards the start, so the state it carries into a window comes from the text after it.
            streams["backward"] = StreamBatches(train_part[::-1], train_cfg.batch_size, train_cfg.seq_len,
                                                train_cfg.seed)
    batches = streams["forward"]  # both directions share its epoch and window arithmetic

    # ---- model and optimizer ----------------------------------------------------------------
    torch.manual_seed(train_cfg.seed)
    if init_source is not None:
        model = CharRNN.from_config(config.model, len(init_source["vocab"]))
        model.load_state_dict(init_source["model"])
        model.extend_vocab(len(vocab))
    else:
        model = CharRNN.from_config(config.model, len(vocab))
    model.to(device)
    average = WeightAverage(model, train_cfg.ema_decay) if train_cfg.ema_decay > 0 else None
    if ranks.rank > 0:
        torch.manual_seed(train_cfg.seed + 1000 * ranks.rank)  # same weights, different dropout masks
    optimizer = build_optimizer(model, train_cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    params = [p for p in model.parameters() if p.requires_grad]

    step, tokens_seen, train_time = 0, 0, 0.0
    bad_steps, skipped_steps = 0, 0  # NaN/Inf steps: in a row now, and in all
    best_val: float | None = None
    evals_since_best = 0
    carried: dict[str, State | None] = dict.fromkeys(streams)  # one carried state per direction
    # Sums over the current log window. They are checkpointed, so a resumed run logs the same averages.
    window_sums = {name: torch.zeros((), device=device) for name in (*(f"loss_{d}" for d in streams),
                                                                      "grad_norm", "clipped")}
    good_steps = 0  # steps in the window that were not skipped
    if checkpoint is not None:
        model.load_state_dict(checkpoint.get("raw_model", checkpoint["model"]))  # raw: "model" may be averaged
        if average is not None:
            average.load(model, checkpoint["model"], checkpoint.get("ema_updates", 0))
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        step, tokens_seen = checkpoint["step"], checkpoint["tokens_seen"]
        train_time = checkpoint["scheduler"]["train_time"]
        best_val, evals_since_best = checkpoint["best_val_loss"], checkpoint["evals_since_best"]
        bad_steps, skipped_steps = checkpoint.get("bad_steps", 0), checkpoint.get("skipped_steps", 0)
        for direction in carried:
            saved = checkpoint.get(STATE_KEYS[direction])
            carried[direction] = None if saved is None else tuple(t[:, rows].to(device) for t in saved)
        per_rank = checkpoint.get("rng_ranks")
        restore_rng_states(per_rank[ranks.rank] if per_rank and len(per_rank) == ranks.world else checkpoint["rng"])
        window = checkpoint.get("log_window", {"sums": {}, "good_steps": 0})
        for name, value in window["sums"].items():
            window_sums[name].fill_(value)
        good_steps = window["good_steps"]
        spent = stop_reason(train_cfg, step, step / batches.steps_per_epoch, train_time)
        if spent:
            value = getattr(train_cfg, spent)
            shown = format_duration(value) if spent == "max_time" else f"{value:g}"
            raise CharlmError(
                f"{out_dir} has already used its budget (train.{spent} = {shown}) at step {step:,}: give a"
                f" larger --{spent.replace('_', '-')} to train further"
            )
        if main:
            truncate_metrics(out_dir / "metrics.jsonl", step)

    if main:
        atomic_write_text(out_dir / "config.yaml", _config_yaml(config))
    log = RunLog(out_dir, purge_from=step + 1 if resume else None) if main else NullLog()
    log.event(
        "start", step, resumed=resume, device=str(device), precision=precision, vocab_size=len(vocab),
        parameters=model.num_parameters(), **{f"train_{unit}": len(train_part), f"val_{unit}": len(val_part)},
        **({"held_out_duplicates": line_splits.duplicates} if lines_mode else {}),
        steps_per_epoch=batches.steps_per_epoch, charlm_version=__version__,
    )

    def averaged() -> contextlib.AbstractContextManager:
        """Evaluate, sample and publish the averaged weights when train.ema_decay is on."""
        return average.applied() if average is not None else contextlib.nullcontext()

    def payload() -> dict[str, Any]:
        epoch, window = batches.position(step)
        with averaged():
            published = {name: value.detach().clone() for name, value in model.state_dict().items()}
        return {
            "config": config.to_dict(),
            "vocab": vocab.to_list(),
            "model": published,
            **({"raw_model": model.state_dict(), "ema_updates": average.updates} if average is not None else {}),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "scheduler": {"train_time": train_time, "step": step},
            "step": step,
            "tokens_seen": tokens_seen,
            "data": {"sha256": token_file.sha256, "path": str(text_path), "epoch": epoch, "window": window},
            **{STATE_KEYS[direction]: None if state is None else
               [t.detach().float().cpu() for t in ranks.gather_state(state)] for direction, state in carried.items()},
            "rng": rng_states(),
            "rng_ranks": ranks.gather_objects(rng_states()) if ranks.enabled else None,
            "best_val_loss": best_val,
            "evals_since_best": evals_since_best,
            "bad_steps": bad_steps,
            "log_window": {"sums": {name: (ranks.sum(total) / ranks.world).item() for name, total in window_sums.items()},
                           "good_steps": good_steps},
            "skipped_steps": skipped_steps,
            "parameters": model.num_parameters(),
            "precision": precision,
        }

    def say(message: str) -> None:
        """A line on stderr that the progress bar steps around (rank 0's only)."""
        if main:
            tqdm.write(message, file=sys.stderr)

    def save(name: str) -> None:
        state = payload()  # every rank takes part: it gathers their streams' state
        if main:
            save_checkpoint(out_dir / name, state)

    def run_eval() -> float | None:
        nonlocal best_val, evals_since_best
        # A capped val split keeps evaluations on a very large text to seconds; the cap is a prefix,
        # so every evaluation of a run sees the same characters.
        whole = lines_mode or train_cfg.eval_max_chars is None  # a list's val lines are few: all of them
        val = val_part if whole else val_part[: train_cfg.eval_max_chars]
        if len(val) < (1 if lines_mode else 2):
            return None
        with averaged():
            results = (evaluate_directions(model, val, train_cfg.eval_batch_size, device, precision, vocab.marker)
                       if main else {})
            sample = (sample_text(model, vocab, config, train_cfg.sample_length, seed=step)
                      if main and train_cfg.sample_length else None)
        # Rank 0 evaluates; the others take its result, so that all keep the same best and patience.
        objective = ranks.broadcast(sum(r.loss for r in results.values()) / len(results) if main else None)
        improved = best_val is None or objective < best_val
        if improved:
            best_val, evals_since_best = objective, 0
            save("best.pt")
        else:
            evals_since_best += 1
        if not main:
            return objective
        result = results["forward"]
        extra: dict[str, float] = {}
        if len(results) > 1:
            for direction, r in results.items():
                extra.update({f"val_loss_{direction}": r.loss, f"val_bpc_{direction}": r.bpc})
        log.event("eval", step, val_loss=result.loss, val_bpc=result.bpc, val_chars=result.chars, **extra,
                  best_val_loss=best_val, time=train_time)
        if sample is not None:
            log.text("sample", sample, step)
        log.flush()
        say(f"step {step:>7,} | val loss {result.loss:.4f} | {result.bpc:.3f} bpc"
            + (f" | backward {extra['val_loss_backward']:.4f}" if extra else "")
            + f" | {format_duration(train_time)}{' | best' if improved else ''}")
        return result.loss

    # ---- the loop -------------------------------------------------------------------------
    bar = tqdm(total=1000, disable=not progress, dynamic_ncols=True, leave=True,
               bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}", desc="training")
    m = config.model
    say(
        f"{text_path.name}: {len(train_part):,} train / {len(val_part):,} val {unit}, {len(vocab)} symbols"
        + (f" ({line_splits.duplicates:,} held-out lines also in train)" if lines_mode and line_splits.duplicates
           else "")
        + f" | {m.num_layers}x{m.hidden_size} {m.cell}, {model.num_parameters() / 1e6:.2f}M params"
        f" | {device.type} {precision}, {torch.get_num_threads()} threads | {out_dir}"
        + (f" | resuming at step {step:,}" if resume else "")
    )
    window_steps, window_start = 0, time.perf_counter()
    prune = False
    last_val: float | None = None
    reason: str | None = None
    clip_norm = train_cfg.clip_norm if train_cfg.clip_norm > 0 else math.inf
    lr = learning_rate(train_cfg, step, 0.0)
    tokens_per_s = 0.0
    model.train()
    segment_start, time_before = time.perf_counter(), train_time

    with StopRequest() as stop:
        while True:
            train_time = time_before + (time.perf_counter() - segment_start)
            epochs = step / batches.steps_per_epoch
            reason = (stop_reason(train_cfg, step, epochs, train_time)
                      or ("interrupted" if stop.requested else None)
                      or ("pruned" if prune else None)
                      or ("early_stopping" if train_cfg.patience and evals_since_best >= train_cfg.patience else None))
            # Under torchrun every rank must stop at the same step and follow the same clock.
            code, train_time = ranks.agree(STOP_CODES.index(reason), train_time)
            reason = STOP_CODES[code]
            if reason:
                break

            epoch, window = batches.position(step)
            if window == 0 or lines_mode:
                # The streams wrap around (the old state is other text), or every line starts afresh.
                carried = dict.fromkeys(streams)
            lr = learning_rate(train_cfg, step, budget_progress(train_cfg, step, epochs, train_time))
            for group in optimizer.param_groups:
                group["lr"] = lr

            losses = []
            for direction, stream in streams.items():
                inputs, targets = stream.batch(step)
                inputs, targets = inputs[rows], targets[rows]
                x = torch.from_numpy(inputs).to(device, non_blocking=True)
                y = torch.from_numpy(targets).to(device, non_blocking=True)
                with autocast(device, precision):
                    logits, carried[direction] = model(x, carried[direction], direction=direction)
                losses.append(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE))
            loss = torch.stack(losses).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if ranks.enabled:  # the mean gradient of the whole batch, as one process would have it
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                loss = ranks.average([p.grad for p in params], loss)
            if train_cfg.clip_value > 0:
                torch.nn.utils.clip_grad_value_(params, train_cfg.clip_value)
            if main and train_cfg.log_layer_grads and (step + 1) % train_cfg.log_interval == 0:
                log.event("grads", step + 1, **layer_grad_norms(model))  # before clipping: what backprop gave
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_norm, foreach=True)
            step += 1
            tokens_seen += batches.tokens_per_step
            window_steps += 1

            # The one sync per step: a NaN or Inf has to be caught before the update reaches the
            # weights. With fp16 the scaler overflows on purpose and skips those steps itself, so
            # there only the loss counts as a fault.
            fault = loss.detach() if precision == "fp16" else loss.detach() + grad_norm
            if not torch.isfinite(fault):
                bad_steps += 1
                skipped_steps += 1
                optimizer.zero_grad(set_to_none=True)
                scaler.update()
                carried = dict.fromkeys(streams)  # a state that met a NaN would poison every later window
                log.event("skip", step, bad_steps=bad_steps, loss=loss.item(), grad_norm=grad_norm.item())
                say(f"warning: step {step:,}: the loss or a gradient is NaN or infinite; skipped this update"
                    f" ({bad_steps} in a row; {train_cfg.max_bad_steps} in a row stop training)")
                if bad_steps >= train_cfg.max_bad_steps:
                    reason = "diverged"
                    break
            else:
                bad_steps = 0
                scaler.step(optimizer)
                scaler.update()
                if average is not None:
                    average.update()
                carried = {direction: detach_state(state) for direction, state in carried.items()}
                for direction, direction_loss in zip(streams, losses):
                    window_sums[f"loss_{direction}"] += direction_loss.detach()
                window_sums["grad_norm"] += grad_norm.detach()
                window_sums["clipped"] += (grad_norm > clip_norm).float()
                good_steps += 1

            if step % train_cfg.log_interval == 0:
                elapsed = time.perf_counter() - window_start
                # `loss` is the forward direction's; a window of only skipped steps has none.
                per_step = 1 / good_steps if good_steps else math.nan
                totals = ranks.sum(torch.stack(list(window_sums.values()))) / ranks.world
                means = {name: total.item() * per_step for name, total in zip(window_sums, totals)}
                mean_loss = means["loss_forward"]
                extra_losses = {f"loss_{d}": means[f"loss_{d}"] for d in streams} if len(streams) > 1 else {}
                tokens_per_s = len(streams) * window_steps * batches.tokens_per_step / max(elapsed, 1e-9)
                log.event(
                    "train", step, loss=mean_loss, bpc=mean_loss / math.log(2), lr=lr, **extra_losses,
                    grad_norm=means["grad_norm"], clip_share=means["clipped"],
                    tokens_per_s=tokens_per_s, tokens=tokens_seen, time=train_time, epoch=step / batches.steps_per_epoch,
                )
                bar.n = min(1000, int(1000 * budget_progress(train_cfg, step, step / batches.steps_per_epoch, train_time)))
                bar.set_postfix_str(
                    f"step {step:,} loss {mean_loss:.3f}"
                    + (f" val {last_val:.3f}" if last_val is not None else "")
                    + f" {tokens_per_s / 1000:.1f}k tok/s"
                )
                for total in window_sums.values():
                    total.zero_()
                window_steps, good_steps, window_start = 0, 0, time.perf_counter()
            if step % train_cfg.eval_interval == 0:
                last_val = run_eval()
                prune = main and on_eval is not None and last_val is not None and on_eval(step, last_val)
            if step % train_cfg.checkpoint_interval == 0:
                save("last.pt")

    # ---- wrap up --------------------------------------------------------------------------
    train_time = time_before + (time.perf_counter() - segment_start)
    if reason != "diverged":  # keep the last periodic checkpoint: these weights lead to NaN
        # An interrupted run stops at once and without the extra evaluation, so that pausing and
        # resuming gives exactly the run that was never paused.
        if step % train_cfg.eval_interval != 0 and reason != "interrupted":
            last_val = run_eval()
        save("last.pt")
    bar.n = min(1000, int(1000 * budget_progress(train_cfg, step, step / batches.steps_per_epoch, train_time)))
    bar.close()
    log.event("end", step, reason=reason, time=train_time, best_val_loss=best_val, last_val_loss=last_val,
              tokens=tokens_seen, skipped_steps=skipped_steps)
    log.close()
    if reason == "diverged":
        kept = _newest_kept(out_dir)
        clip = (f"lower train.clip_norm (now {train_cfg.clip_norm:g})" if train_cfg.clip_norm > 0
                else "turn on train.clip_norm (e.g. 1.0)")
        raise CharlmError(
            f"training stopped at step {step:,}: {bad_steps} steps in a row had a NaN or infinite loss or"
            f" gradient (exploding gradients); lower train.lr (now {train_cfg.lr:g}) or {clip}, then resume"
            f" or start again; {kept}"
        )
    return TrainResult(out_dir=out_dir, step=step, stop_reason=reason or "done", best_val_loss=best_val,
                       last_val_loss=last_val, train_time=train_time, tokens_per_s=tokens_per_s,
                       parameters=model.num_parameters())


def layer_grad_norms(model: CharRNN) -> dict[str, float]:
    """The gradient norm of each layer's parameters (see ``CharRNN.layer_groups``)."""
    norms = {}
    for group, parameters in model.layer_groups().items():
        grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
        if grads:
            norms[group] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    return norms


def _newest_kept(out_dir: Path) -> str:
    """Which checkpoint a run that stopped on NaNs leaves to resume from, for its error message."""
    try:
        path, checkpoint = newest_checkpoint(out_dir)
    except CharlmError:
        return "no checkpoint had been written yet"
    return f"{path} (step {checkpoint['step']:,}) is kept"


def _config_yaml(config: Config) -> str:
    import yaml

    header = f"# resolved configuration of this run (charlm {__version__})\n"
    return header + yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
