"""The ``charlm`` command: a thin layer over the Python API.

torch is imported inside the commands, never at module level, so ``charlm --help`` is instant.
Every CharlmError and usage error ends as one ``error: …`` line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from charlm import __version__
from charlm.errors import CharlmError

EXIT_USAGE = 2


def _debug_enabled() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get("CHARLM_DEBUG") == "1"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click group and turn errors into one line on stderr."""
    try:
        cli.main(args=argv, prog_name="charlm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "charlm"
        print(f"error: {exc.format_message()} (see '{command} --help')", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except CharlmError as exc:
        if _debug_enabled():
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: that is not an error of ours.
        sys.stderr.close()
        sys.exit(0)
    except Exception as exc:  # a bug: still one line, unless --debug asks for the traceback
        if _debug_enabled():
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: internal error {type(exc).__name__}: {first[:300]} (rerun with --debug for the"
              " traceback, and please report it)", file=sys.stderr)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charlm")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Train character-level RNN, GRU and LSTM language models and sample from them.

    \b
    Quick start:
      charlm corpus get tinyshakespeare
      charlm train --corpus tinyshakespeare --max-time 10m -o runs/shakespeare
      charlm sample runs/shakespeare --length 500
    """


# ---- train ---------------------------------------------------------------------------------

# Convenience flags: each is a shortcut for one --set key.
FLAG_KEYS = {
    "cell": "model.cell",
    "hidden_size": "model.hidden_size",
    "num_layers": "model.num_layers",
    "dropout": "model.dropout",
    "batch_size": "train.batch_size",
    "seq_len": "train.seq_len",
    "lr": "train.lr",
    "max_steps": "train.max_steps",
    "max_epochs": "train.max_epochs",
    "max_time": "train.max_time",
    "precision": "train.precision",
    "device": "train.device",
    "threads": "train.threads",
    "seed": "train.seed",
    "encoding": "data.encoding",
}


@cli.command()
@click.argument("file", required=False, type=click.Path(dir_okay=True, path_type=Path))
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path), help="YAML config file.")
@click.option("--corpus", help="Train on a named corpus (see `charlm corpus list`) instead of FILE.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Run directory [default: runs/<name>-<time>].")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set train.lr=1e-3 (repeatable).")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue the run in this directory from its newest checkpoint.")
@click.option("--init-from", type=click.Path(path_type=Path), help="Start from a checkpoint's weights (fine-tuning).")
@click.option("--extend-vocab", is_flag=True, help="With --init-from: add the text's new characters to the vocabulary.")
@click.option("--cell", help="rnn_tanh | rnn_relu | gru | lstm")
@click.option("--hidden-size", type=int)
@click.option("--num-layers", type=int)
@click.option("--dropout", type=float)
@click.option("--batch-size", type=int)
@click.option("--seq-len", type=int)
@click.option("--lr", type=float)
@click.option("--max-steps", type=int)
@click.option("--max-epochs", type=float)
@click.option("--max-time", help="Wall-clock budget: 90s, 10m, 1h30m.")
@click.option("--precision", help="auto | fp32 | bf16 | fp16")
@click.option("--device", help="auto | cpu | cuda | mps")
@click.option("--threads", type=int, help="CPU threads (0: torch's choice).")
@click.option("--seed", type=int)
@click.option("--encoding", help="Text encoding of FILE [default: utf-8].")
@click.option("--no-progress", is_flag=True, help="No progress bar (evaluations are still printed).")
@click.option("--no-sample", is_flag=True, help="Do not print a sample at the end.")
def train(file: Path | None, config_file: Path | None, corpus: str | None, out: Path | None,
          assignments: tuple[str, ...], resume_dir: Path | None, init_from: Path | None,
          extend_vocab: bool, no_progress: bool, no_sample: bool, **flags: Any) -> None:
    """Train a model on FILE (any UTF-8 text) or on --corpus NAME."""
    from charlm.config import build_config, parse_scalar, parse_set

    overrides: list[tuple[str, Any]] = []
    for name, key in FLAG_KEYS.items():
        if flags.get(name) is not None:
            value = flags[name]
            overrides.append((key, parse_scalar(value) if isinstance(value, str) and key != "data.encoding" else value))
    overrides += [parse_set(a) for a in assignments]
    if file is not None:
        overrides.append(("data.path", str(file)))
        overrides.append(("data.corpus", None))
    elif corpus is not None:
        overrides.append(("data.corpus", corpus))
        overrides.append(("data.path", None))

    if extend_vocab and not init_from:
        raise CharlmError("--extend-vocab only applies with --init-from CKPT")
    if resume_dir is not None:
        if init_from or config_file:
            raise CharlmError("--resume continues a run with its own config: drop --init-from/--config")
        if out is not None and out != resume_dir:
            raise CharlmError("--resume DIR writes to DIR: drop -o/--out")
        config = _resume_config(resume_dir, overrides)
        out = resume_dir
    else:
        config = build_config(str(config_file) if config_file else None, overrides)

    text_path = _text_path(config)
    if out is None:
        name = config.data.corpus or text_path.stem
        out = Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"

    from charlm.train import train as run_training

    result = run_training(
        config, text_path, out, resume=resume_dir is not None,
        init_from=str(init_from) if init_from else None, extend_vocab=extend_vocab, progress=not no_progress,
    )
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 speaks for the run
        code = 130 if result.stop_reason == "interrupted" else 0
        _leave_torchrun_worker(code)
        sys.exit(code)
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    click.echo(
        f"stopped ({result.stop_reason}) at step {result.step:,} after {result.train_time:.0f}s;"
        f" best val loss {best}; run in {out}", err=True,
    )
    if result.stop_reason == "interrupted":
        click.echo(f"resume with: charlm train --resume {out}", err=True)
        _leave_torchrun_worker(130)
        sys.exit(130)
    elif not no_sample:
        import charlm

        model = charlm.load(str(out))
        sample_cfg = config.sample
        click.echo(f"--- sample from {model.path} ---", err=True)
        prime = sample_cfg.prime if not model.vocab.missing(sample_cfg.prime) else ""
        options = {"temperature": sample_cfg.temperature, "top_k": sample_cfg.top_k, "top_p": sample_cfg.top_p,
                   "seed": sample_cfg.seed}
        if model.lines_mode:
            click.echo("\n".join(model.sample_lines(10, prime, sample_cfg.length, **options)))
        else:
            click.echo(model.sample(prime, length=sample_cfg.length, **options))
    _leave_torchrun_worker(0)


def _leave_torchrun_worker(code: int) -> None:
    """Under torchrun, end a worker that has finished (files closed, output flushed) without
    Python's interpreter teardown: there gloo's C++ threads can still release tensors and abort
    the process ("terminate called without an active exception", pytorch/pytorch#190489), which
    torchrun reports as a failed run. Seen now and then in CI even after destroy_process_group.
    A no-op outside torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


RESUMABLE_SECTIONS = ("train", "sample")
RESUME_FIXED_KEYS = ("train.batch_size", "train.seq_len", "train.seed")


def _resume_config(run_dir: Path, overrides: list[tuple[str, Any]]):
    """The run's own config, with overrides allowed where they keep the run the same run."""
    from charlm.config import Config, build_config
    from charlm.rundir import check_not_in_use, newest_checkpoint

    if not run_dir.is_dir():
        raise CharlmError(f"no run directory {run_dir} to resume: check the path given to --resume")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone looks at the lock
        check_not_in_use(run_dir)  # a run still writing here is the better thing to report than its checkpoints
    path, checkpoint = newest_checkpoint(run_dir)
    saved = Config.from_dict(checkpoint["config"], source=str(path)).to_dict()
    config = build_config(None, overrides, base=Config.from_dict(saved))
    # Repeating a setting of the run is fine (the same command line plus --resume works); changing one
    # that defines the run is not.
    for key, _ in overrides:
        section, name = key.split(".", 1)
        if key in ("data.path", "data.corpus"):
            continue  # the same text may have moved; its checksum is checked against the run's
        changed = getattr(getattr(config, section), name) != saved[section][name]
        if changed and (section not in RESUMABLE_SECTIONS or key in RESUME_FIXED_KEYS):
            raise CharlmError(
                f"{key} cannot change when resuming (it would be another run): start a new run,"
                f" e.g. with --init-from {path}"
            )
    return config


def _text_path(config) -> Path:
    from charlm.corpora import text_of

    return text_of(config, "no text to train on: give FILE, --corpus NAME, or data.path in the config")


# ---- sample --------------------------------------------------------------------------------

def _decode_escapes(text: str) -> str:
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--length", type=int, help="Characters to generate [default: from the run's config, 500].")
@click.option("--temperature", type=float, help="> 0; lower is safer, higher is wilder [default: 0.8].")
@click.option("--top-k", type=int, help="Sample only from the k most likely characters.")
@click.option("--top-p", type=float, help="Sample only from the smallest set with this much probability.")
@click.option("--greedy", is_flag=True, help="Always take the most likely character.")
@click.option("--prime", help="Text to start from; \\n means newline.")
@click.option("--prime-file", type=click.Path(path_type=Path), help="Read the prime from a file.")
@click.option("--seed", type=int, help="Same seed, same text.")
@click.option("-n", "--num-samples", type=int, default=1, show_default=True, help="Samples, generated as one batch.")
@click.option("--stop", help="Stop a sample once it has produced this string (\\n means newline).")
@click.option("--output", type=click.Path(path_type=Path), help="Also write the samples to this file.")
@click.option("--novel", is_flag=True, help="Lines mode: keep only lines not in the training set.")
@click.option("--unique", is_flag=True, help="Lines mode: drop repeated lines.")
@click.option("--reverse", is_flag=True,
              help="Bidirectional models: write right to left; --prime is the end of the text.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | mps | auto")
def sample(checkpoint: Path, length: int | None, temperature: float | None, top_k: int | None,
           top_p: float | None, greedy: bool, prime: str | None, prime_file: Path | None,
           seed: int | None, num_samples: int, stop: str | None, output: Path | None, novel: bool, unique: bool,
           reverse: bool, device: str) -> None:
    """Generate text from CHECKPOINT (a .pt file, or a run directory: its best.pt).

    With --reverse the text is generated right to left and printed in reading order, ending
    with the prime.
    """
    from charlm.config import build_config

    if prime is not None and prime_file is not None:
        raise CharlmError("give --prime or --prime-file, not both")
    if num_samples < 1:
        raise CharlmError(f"--num-samples must be >= 1, got {num_samples}")
    if top_k is not None and top_k < 1:
        raise CharlmError(f"--top-k must be >= 1, got {top_k}; leave it out to sample from every character")
    if prime_file is not None:
        from charlm.data import read_text

        prime = read_text(prime_file)
    elif prime is not None:
        prime = _decode_escapes(prime)
    stop = _decode_escapes(stop) if stop else None
    if stop == "":
        raise CharlmError("--stop needs a non-empty string")
    if output is not None and output.parent and not output.parent.exists():
        raise CharlmError(f"cannot write {output}: folder {output.parent} does not exist")
    # Validate the options with the same rules as the config before loading anything heavy.
    overrides = [(f"sample.{k}", v) for k, v in
                 (("length", length), ("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                  ("seed", seed)) if v is not None]
    build_config(None, overrides)

    import charlm

    model = charlm.load(str(checkpoint), device=device)
    saved = model.config.sample
    settings = {
        "length": length if length is not None else saved.length,
        "temperature": temperature if temperature is not None else saved.temperature,
        "top_k": top_k if top_k is not None else saved.top_k,
        "top_p": top_p if top_p is not None else saved.top_p,
    }
    prime = prime if prime is not None else (saved.prime if not model.vocab.missing(saved.prime) else "")
    model.check_text(prime)
    if model.lines_mode:
        if reverse or stop:
            raise CharlmError("--reverse and --stop do not apply to a lines-mode model: each sample is one line")
        rendered = _sample_lines(model, num_samples, prime, settings, greedy, seed, novel, unique)
        sys.stdout.write(rendered)
        if output is not None:
            from charlm.fsutil import atomic_write_text

            atomic_write_text(output, rendered)
        return
    if novel or unique:
        raise CharlmError("--novel and --unique apply to models trained on lines: train with --set data.mode=lines")
    # Generated text in the order it is made; --reverse makes it right to left.
    made = [""] * num_samples
    stop_made = stop[::-1] if stop and reverse else stop
    stream_live = num_samples == 1 and not reverse
    if stream_live:
        sys.stdout.write(prime)
        sys.stdout.flush()
    done = [False] * num_samples
    for chars in model.stream(prime, settings["length"], num_samples, settings["temperature"], settings["top_k"],
                              settings["top_p"], greedy, seed, reverse=reverse):
        for i, ch in enumerate(chars):
            if done[i]:
                continue
            made[i] += ch
            if stream_live:
                sys.stdout.write(ch)
                sys.stdout.flush()
            if stop_made and made[i].endswith(stop_made):
                done[i] = True
        if all(done):
            break
    texts = [m[::-1] + prime if reverse else prime + m for m in made]
    if num_samples == 1:
        rendered = texts[0] + "\n"
    else:
        rendered = "".join(f"==> sample {i + 1} <==\n{text}\n" for i, text in enumerate(texts))
    sys.stdout.write("\n" if stream_live else rendered)  # a live stream has printed its text already
    sys.stdout.flush()
    if output is not None:
        from charlm.fsutil import atomic_write_text

        atomic_write_text(output, rendered)


# ---- sweep ---------------------------------------------------------------------------------

@cli.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Sweep directory [default: sweeps/<name>].")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Trials run at once, as separate processes sharing the CPU threads.")
@click.option("--storage", help="Optuna storage URL shared by workers on many machines [default: sqlite in -o].")
@click.option("--dry-run", is_flag=True, help="Print the trials (grid) or the search space and exit.")
@click.option("--report", is_flag=True, help="Print the results table of the sweep so far and exit.")
def sweep(sweep_file: Path, out: Path | None, workers: int, storage: str | None, dry_run: bool, report: bool) -> None:
    """Run a hyperparameter sweep described by SWEEP_FILE (YAML) on Optuna.

    Re-running the same command resumes the sweep: finished trials are kept, interrupted ones run
    again. Each trial is an ordinary run directory (charlm sample/eval work on it).
    """
    from charlm.sweep import describe, load_sweep, open_study, results_table, run_sweep, trial_rows, write_results

    if workers < 1:
        raise CharlmError(f"--workers must be >= 1, got {workers}")
    spec = load_sweep(sweep_file)
    if dry_run:
        click.echo(describe(spec))
        return
    out = out or Path("sweeps") / spec.name
    if report:
        from charlm.sweep import default_storage

        if storage is None and not (out / "study.db").exists():
            raise CharlmError(f"no sweep in {out}: run `charlm sweep {sweep_file}` first, or give -o DIR")
        study, _ = open_study(spec, storage or default_storage(out), create=False)
        rows = trial_rows(study)
        write_results(rows, spec, out)
    else:
        rows = run_sweep(spec, out, workers, storage, echo=lambda line: click.echo(line, err=True))
    click.echo(results_table(rows, spec))
    best = next((r for r in rows if r.state == "COMPLETE"), None)
    if best is not None:
        click.echo(f"best: trial {best.number}, val loss {best.value:.4f} -> charlm sample {best.directory}", err=True)
    click.echo(f"results: {out / 'results.csv'}; TensorBoard: tensorboard --logdir {out}", err=True)


def _sample_lines(model, count: int, prime: str, settings: dict, greedy: bool, seed: int | None, novel: bool,
                  unique: bool) -> str:
    """``count`` lines, one per output line; with --novel/--unique, more rounds until enough pass."""
    known = model.training_lines() if novel else set()
    kept: list[str] = []
    made = novel_count = rounds = 0
    while len(kept) < count and rounds < 50:
        round_seed = None if seed is None else seed + rounds
        for line in model.sample_lines(count, prime, settings["length"], seed=round_seed, greedy=greedy,
                                       temperature=settings["temperature"], top_k=settings["top_k"],
                                       top_p=settings["top_p"]):
            made += 1
            is_novel = line not in known
            novel_count += is_novel
            if (novel and not is_novel) or (unique and line in kept) or len(kept) >= count:
                continue
            kept.append(line)
        rounds += 1
        if greedy:
            break  # greedy lines are all the same: more rounds cannot add any
    if novel:
        click.echo(f"novel: {novel_count} of {made} generated lines ({100 * novel_count / max(made, 1):.0f}%)"
                   " are not in the training set", err=True)
    if len(kept) < count:
        click.echo(f"warning: only {len(kept)} of {count} lines passed the filters", err=True)
    return "".join(line + "\n" for line in kept)


# ---- eval and info -------------------------------------------------------------------------

@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True,
              help="Without FILE: which split of the checkpoint's own text.")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--device", default="cpu", show_default=True)
def eval_command(checkpoint: Path, file: Path | None, split: str, encoding: str, as_json: bool, device: str) -> None:
    """Loss, bits per character and perplexity of CHECKPOINT on FILE or on its own val split."""
    import charlm

    model = charlm.load(str(checkpoint), device=device)
    if file is not None:
        array, unknown = model.file_data(file, encoding, progress=not as_json)
        source = {"file": str(file), "unknown_chars": unknown}
    else:
        array = model.own_data(split, progress=not as_json)
        source = {"file": model.checkpoint["data"]["path"], "split": split, "unknown_chars": 0}
        if len(array) < (1 if model.lines_mode else 2):
            raise CharlmError(f"the run's {split} split is empty: pass a FILE or choose another --split")
    if model.lines_mode:
        source["lines"] = len(array)
    result = model.evaluate_tokens(array)
    report = {**result, **source, "checkpoint": str(model.path)}
    if as_json:
        click.echo(json.dumps(report))
        return
    where = f"{source['file']}" + (f" ({source['split']} split)" if "split" in source else "")
    click.echo(f"{where}: loss {result['loss']:.4f} nats/char, {result['bpc']:.4f} bits/char,"
               f" perplexity {result['perplexity']:.3f}, {result['chars']:,} chars")
    if "loss_backward" in result:
        click.echo(f"backward direction: loss {result['loss_backward']:.4f} nats/char,"
                   f" {result['bpc_backward']:.4f} bits/char")
    if source["unknown_chars"]:
        click.echo(f"{source['unknown_chars']:,} characters outside the model's vocabulary were skipped", err=True)


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(checkpoint: Path, as_json: bool) -> None:
    """Config, vocabulary, size and progress of a checkpoint."""
    from charlm.checkpoint import load_checkpoint, resolve_checkpoint
    from charlm.data import MARKER

    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    model_params = ckpt.get("parameters")
    report = {
        "checkpoint": str(path),
        "charlm_version": ckpt.get("charlm_version"),
        "format_version": ckpt.get("format_version"),
        "vocab_size": len(ckpt["vocab"]),
        "vocab": "".join(c for c in ckpt["vocab"] if c != MARKER),
        "mode": ckpt["config"]["data"].get("mode", "stream"),
        "parameters": model_params,
        "step": ckpt.get("step"),
        "tokens_seen": ckpt.get("tokens_seen"),
        "train_time_s": ckpt.get("scheduler", {}).get("train_time"),
        "best_val_loss": ckpt.get("best_val_loss"),
        "precision": ckpt.get("precision"),
        "bidirectional": bool(ckpt["config"]["model"].get("bidirectional")),
        "data": ckpt.get("data"),
        "config": ckpt["config"],
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    m = ckpt["config"]["model"]
    best = report["best_val_loss"]
    click.echo(f"checkpoint   {path}")
    kind = "bidirectional (forward + backward stacks) " if report["bidirectional"] else ""
    click.echo(f"model        {kind}{m['num_layers']} x {m['hidden_size']} {m['cell']}, embedding"
               f" {m['embedding_size'] or m['hidden_size']}, dropout {m['dropout']}, tied {m['tie_weights']}")
    click.echo(f"parameters   {model_params:,}")
    lines = " (lines mode: the line marker and)" if report["mode"] == "lines" else ""
    click.echo(f"vocabulary   {report['vocab_size']} symbols{lines}: {report['vocab']!r}")
    click.echo(f"trained      {report['step']:,} steps, {report['tokens_seen']:,} tokens,"
               f" {report['train_time_s'] or 0:.0f}s, precision {report['precision']}")
    both = " (mean of both directions)" if report["bidirectional"] else ""
    click.echo(f"best val     {best:.4f} nats/char{both}" if best is not None else "best val     n/a")
    click.echo(f"text         {report['data']['path']} (sha256 {report['data']['sha256'][:16]}…)")
    click.echo(f"charlm       {report['charlm_version']} (checkpoint format {report['format_version']})")


# ---- inspect -------------------------------------------------------------------------------

@cli.group(name="inspect")
def inspect_group() -> None:
    """Look inside models: vanishing gradients, long-range memory, surprisal and hidden units."""


def _comma_list(text: str | None, what: str, convert=str) -> list:
    if not text:
        return []
    try:
        return [convert(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CharlmError(f"{what} must be a comma-separated list, e.g. 5,20,50; got {text!r}") from None


def _out_dir(out: Path) -> Path:
    from charlm.fsutil import describe_os_error

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(describe_os_error(exc, out, "create the directory")) from None
    return out


@inspect_group.command(name="gradients", short_help="Gradient norm by distance k back: vanishing gradients (PNG + JSON).")
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--cells", help="With configs (or none): one fresh model per cell, e.g. rnn_tanh,gru,lstm.")
@click.option("--max-distance", "max_distance", type=int, default=200, show_default=True,
              help="K: measure ‖∂L_t/∂x_(t−k)‖ for k = 1…K.")
@click.option("--positions", type=int, default=256, show_default=True, help="Text positions averaged over.")
@click.option("--burn-in", type=int, default=100, show_default=True,
              help="Characters read before each measured window, so the state is a mid-text one.")
@click.option("--seed", type=int, default=0, show_default=True, help="Positions and fresh models' weights.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("inspect"), show_default=True,
              help="Folder for gradients.png and gradients.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the curves as one JSON object.")
@click.option("--device", default="cpu", show_default=True)
def inspect_gradients(sources: tuple[Path, ...], cells: str | None, max_distance: int, positions: int, burn_in: int,
                      seed: int, out: Path, as_json: bool, device: str) -> None:
    """How strongly the loss depends on the input k steps back, for checkpoints or fresh models.

    \b
    SOURCES are run directories, checkpoints (.pt) or configs (.yaml: a freshly initialised
    model), and at most one text FILE to measure on (default: each model's own val split).
    \b
      charlm inspect gradients runs/shakespeare
      charlm inspect gradients --cells rnn_tanh,gru,lstm ../shared/corpora/tinyshakespeare.txt
    """
    from charlm.data import check_text_file
    from charlm.fsutil import atomic_write_text
    from charlm.inspection.gradients import gradient_curve, plot_curves, summary_line
    from charlm.inspection.sources import is_model_source, load_subjects

    models = [s for s in sources if is_model_source(s)]
    texts = [s for s in sources if not is_model_source(s)]
    if len(texts) > 1:
        raise CharlmError(f"give at most one text FILE (got {', '.join(map(str, texts))}); models are run"
                          " directories, .pt checkpoints or .yaml configs")
    for path in models:
        if not path.exists():
            raise CharlmError(f"{path} does not exist: give a run directory, a checkpoint or a config file")
    text = check_text_file(texts[0]) if texts else None
    if max_distance < 1 or positions < 1 or burn_in < 0:
        raise CharlmError("--max-distance and --positions must be at least 1 and --burn-in at least 0")
    subjects = load_subjects(models, text, _comma_list(cells, "--cells"), seed, device)
    curves = []
    for subject in subjects:
        curve = gradient_curve(subject.model, subject.tokens, subject.label, max_distance, positions, burn_in,
                               seed=seed, progress=not as_json)
        curves.append(curve)
        if not as_json:
            click.echo(summary_line(curve))
    _out_dir(out)
    report = {"text": str(text) if text else "each model's own val split", "max_distance": max_distance,
              "positions": positions, "burn_in": burn_in, "seed": seed, "curves": [c.as_dict() for c in curves]}
    atomic_write_text(out / "gradients.json", json.dumps(report, indent=1) + "\n")
    plot_curves(curves, out / "gradients.png", text.name if text else "each model's val split")
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"wrote {out / 'gradients.png'} and {out / 'gradients.json'}", err=True)


@inspect_group.command(name="memory", short_help="The long-range memory task: accuracy by cell type and gap.")
@click.option("--cells", default="rnn_tanh,gru,lstm", show_default=True, help="Cell types to compare.")
@click.option("--gaps", default="5,20,50,100,200", show_default=True,
              help="Characters between the key and the answer.")
@click.option("--steps", type=int, default=800, show_default=True, help="Training steps per cell and gap (at most).")
@click.option("--hidden-size", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, help="Models trained at once, one thread each [default: one per core].")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("inspect"), show_default=True,
              help="Folder for memory.png and memory.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
def inspect_memory(cells: str, gaps: str, steps: int, hidden_size: int, seed: int, workers: int, out: Path,
                   as_json: bool) -> None:
    """Can each cell type carry one character across a gap? A small synthetic task, trained briefly.

    Each line is a key (A or B), filler words, a cue '=' and the answer (x or y) exactly GAP
    characters after the key. Accuracy is scored at the answer on fresh lines; chance is 50%.
    """
    from charlm.config import CELLS
    from charlm.fsutil import atomic_write_text
    from charlm.inspection.memory import plot_results, results_table, run_all

    cell_list = _comma_list(cells, "--cells")
    for cell in cell_list:
        if cell not in CELLS:
            raise CharlmError(f"unknown cell {cell!r} in --cells: choose from {', '.join(CELLS)}")
    gap_list = _comma_list(gaps, "--gaps", int)
    if not cell_list or not gap_list or min(gap_list) < 2 or steps < 1 or hidden_size < 1 or workers < 0:
        raise CharlmError("--cells and --gaps need at least one entry each, gaps start at 2, and --steps and"
                          " --hidden-size must be at least 1")
    jobs = [(cell, gap) for cell in cell_list for gap in gap_list]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results = run_all(jobs, steps, hidden_size, seed, workers, progress=not as_json)
    _out_dir(out)
    report = {"steps": steps, "hidden_size": hidden_size, "seed": seed, "results": [r.as_dict() for r in results]}
    atomic_write_text(out / "memory.json", json.dumps(report, indent=1) + "\n")
    plot_results(results, out / "memory.png")
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo("accuracy at the decision point (chance: 50%)")
    click.echo(results_table(results))
    click.echo(f"wrote {out / 'memory.png'} and {out / 'memory.json'}", err=True)


@inspect_group.command(name="text", short_help="A text coloured by surprisal or a hidden unit (HTML); --find-units.")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Write the HTML page here (e.g. page.html).")
@click.option("--cell", "unit", type=int, help="Colour by hidden unit N instead of surprisal.")
@click.option("--layer", type=int, help="Layer of --cell (0 is the first) [default: the last].")
@click.option("--state", "state_name", type=click.Choice(["h", "c"]), default="h", show_default=True,
              help="Hidden state h, or an LSTM's cell state c.")
@click.option("--find-units", "feature", metavar="PATTERN",
              help="Rank hidden units by how well they track a feature: a regular expression (inside a match) or"
                   " quotes, single-quotes, parens, brackets, line-position, capitals, line-start.")
@click.option("--top", type=int, default=10, show_default=True, help="How many units --find-units prints.")
@click.option("--max-chars", type=int, default=5000, show_default=True, help="Read at most this many characters.")
@click.option("--encoding", default="utf-8", show_default=True)
def inspect_text(checkpoint: Path, file: Path, out: Path | None, unit: int | None, layer: int | None, state_name: str,
                 feature: str | None, top: int, max_chars: int, encoding: str) -> None:
    """Surprisal of every character of FILE under CHECKPOINT, as an HTML page, and hidden units.

    \b
      charlm inspect text runs/shakespeare play.txt -o page.html
      charlm inspect text runs/shakespeare play.txt --cell 37 -o unit37.html
      charlm inspect text runs/shakespeare play.txt --find-units parens
    """
    import numpy as np

    import charlm
    from charlm.data import check_text_file, read_text
    from charlm.fsutil import atomic_write_text
    from charlm.inspection.text import feature_values, rank_units, render_html, trace

    if out is None and feature is None:
        raise CharlmError("nothing to do: give -o page.html for the page, or --find-units PATTERN (or both)")
    if max_chars < 1 or top < 1:
        raise CharlmError("--max-chars and --top must be at least 1")
    model = charlm.load(checkpoint)
    text = read_text(check_text_file(file), encoding)[:max_chars]
    if not text:
        raise CharlmError(f"{file} is empty: give a text to read")
    layers, hidden = model.model.num_layers, model.model.hidden_size
    layer = layers - 1 if layer is None else layer
    if not 0 <= layer < layers:
        raise CharlmError(f"--layer {layer} is out of range: this model has layers 0 to {layers - 1}")
    if unit is not None and not 0 <= unit < hidden:
        raise CharlmError(f"--cell {unit} is out of range: layer {layer} has units 0 to {hidden - 1}")
    result = trace(model.model, model.vocab, text, state_name)
    chosen = (layer, unit) if unit is not None else None
    if feature is not None:
        values, description = feature_values(text, feature)
        ranking = rank_units(result, values, top)
        binary = set(np.unique(values)) <= {0.0, 1.0}
        extent = f"{int(values.sum()):,} of {len(text):,} characters" if binary else f"{len(text):,} characters"
        click.echo(f"units tracking {description} ({extent}), by correlation of {state_name} with it:")
        click.echo(f"{'rank':>4}  {'layer':>5}  {'unit':>5}  correlation")
        for rank, score in enumerate(ranking, 1):
            click.echo(f"{rank:>4}  {score.layer:>5}  {score.unit:>5}  {score.correlation:+.3f}")
        if chosen is None and out is not None:  # the page shows the best unit found
            chosen = (ranking[0].layer, ranking[0].unit)
    if out is not None:
        what = f"unit {chosen[1]} of layer {chosen[0]}" if chosen else "surprisal"
        page = render_html(result, f"{file.name} read by {model.path.parent.name}/{model.path.name}: {what}", chosen)
        atomic_write_text(out, page)
        known = result.known
        click.echo(f"wrote {out} ({len(text):,} characters; mean surprisal"
                   f" {result.surprisal[known].mean():.3f} nats/char)", err=True)


# ---- corpora -------------------------------------------------------------------------------

@cli.group()
def corpus() -> None:
    """List and fetch named corpora."""


@corpus.command(name="list")
def corpus_list() -> None:
    """Show the corpora `charlm corpus get` and `--corpus` know."""
    from charlm.corpora import registry

    for name, source in registry().items():
        click.echo(f"{name:<16} {source.description}")


@corpus.command(name="get")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="Folder to keep it in.")
def corpus_get(name: str, directory: Path | None) -> None:
    """Fetch corpus NAME (verified by sha256) and print its path."""
    from charlm.corpora import get_corpus

    click.echo(str(get_corpus(name, directory)))


if __name__ == "__main__":  # pragma: no cover
    main()
