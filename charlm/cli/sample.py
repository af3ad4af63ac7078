"""``charlm sample``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from charlm.cli.options import decode_escapes
from charlm.errors import CharlmError


@click.command()
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
@click.option("--stop-at-document-end", is_flag=True,
              help="Models trained on several files: stop a sample where its document ends.")
@click.option("--output", type=click.Path(path_type=Path), help="Also write the samples to this file.")
@click.option("--novel", is_flag=True, help="Lines mode: keep only lines not in the training set.")
@click.option("--unique", is_flag=True, help="Lines mode: drop repeated lines.")
@click.option("--reverse", is_flag=True,
              help="Bidirectional models: write right to left; --prime is the end of the text.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | mps | auto")
def sample(checkpoint: Path, prime: str | None, prime_file: Path | None, num_samples: int, stop: str | None,
           stop_at_document_end: bool, output: Path | None, novel: bool, unique: bool, reverse: bool, device: str, **flags: Any) -> None:
    """Generate text from CHECKPOINT (a .pt file, or a run directory: its best.pt).

    With --reverse the text is generated right to left and printed in reading order, ending
    with the prime.
    """
    import charlm

    prime, stop = _prime(prime, prime_file), decode_escapes(stop) if stop else None
    _check(flags, num_samples, stop, output)
    model = charlm.load(str(checkpoint), device=device)
    saved = model.config.sample
    length = flags["length"] if flags["length"] is not None else saved.length
    options = {name: value if value is not None else getattr(saved, name) for name, value in flags.items()
               if name in ("temperature", "top_k", "top_p")}
    options.update(greedy=flags["greedy"], seed=flags["seed"])
    prime = prime if prime is not None else (saved.prime if not model.vocab.missing(saved.prime) else "")
    model.check_text(prime)
    if model.kind.unit == "lines":  # a list's samples are whole lines, one a line, with their own filters
        if reverse or stop:
            raise CharlmError("--reverse and --stop do not apply to a lines-mode model: each sample is one line")
        draw = model.new_lines(num_samples, novel, unique, prime=prime, max_length=length, **options)
        if novel:
            click.echo(f"novel: {draw.novel} of {draw.made} generated lines ({100 * draw.novel / max(draw.made, 1):.0f}%)"
                       " are not in the training set", err=True)
        if len(draw.lines) < num_samples:
            click.echo(f"warning: only {len(draw.lines)} of {num_samples} lines passed the filters", err=True)
        rendered = "".join(line + "\n" for line in draw.lines)
        sys.stdout.write(rendered)
    else:
        if novel or unique:
            raise CharlmError("--novel and --unique apply to models trained on lines: train with --set data.mode=lines")
        rendered = _write_texts(model, prime, length, num_samples, stop, reverse,
                                {**options, "stop_at_document_end": stop_at_document_end})
    if output is not None:
        from charlm.fsutil import atomic_write_text

        atomic_write_text(output, rendered)


def _prime(prime: str | None, prime_file: Path | None) -> str | None:
    if prime is not None and prime_file is not None:
        raise CharlmError("give --prime or --prime-file, not both")
    if prime_file is not None:
        from charlm.data.source import read_text

        return read_text(prime_file)
    return decode_escapes(prime) if prime is not None else None


def _check(flags: dict[str, Any], num_samples: int, stop: str | None, output: Path | None) -> None:
    """Every option checked before anything heavy is loaded, with the config's own rules."""
    from charlm.config import build_config

    if num_samples < 1:
        raise CharlmError(f"--num-samples must be >= 1, got {num_samples}")
    if flags["top_k"] is not None and flags["top_k"] < 1:
        raise CharlmError(f"--top-k must be >= 1, got {flags['top_k']}; leave it out to sample from every character")
    if stop == "":
        raise CharlmError("--stop needs a non-empty string")
    if output is not None and output.parent and not output.parent.exists():
        raise CharlmError(f"cannot write {output}: folder {output.parent} does not exist")
    build_config(None, [(f"sample.{name}", flags[name]) for name in ("length", "temperature", "top_k", "top_p", "seed")
                        if flags[name] is not None])


def _write_texts(model: Any, prime: str, length: int, count: int, stop: str | None, reverse: bool,
                 options: dict[str, Any]) -> str:
    """Print the samples (one sample streams as it is made) and return what was printed."""
    def live(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    streaming = count == 1 and not reverse
    texts = model.texts(prime, length, count, stop=stop, reverse=reverse, on_text=live if streaming else None,
                        **options)
    if count == 1:
        rendered = texts[0] + "\n"
    else:
        rendered = "".join(f"==> sample {i + 1} <==\n{text}\n" for i, text in enumerate(texts))
    sys.stdout.write("\n" if streaming else rendered)  # a stream has printed its text already
    sys.stdout.flush()
    return rendered
