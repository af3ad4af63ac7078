"""Options shared by several commands, and the flags that are shortcuts for config keys.

Each shortcut is declared once, in ``SHORTCUTS``: ``config_shortcuts`` turns the table into click
options and hands the command the (key, value) pairs that were given, in the table's order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from charlm.errors import CharlmError


@dataclass(frozen=True)
class Shortcut:
    flag: str  # --hidden-size
    key: str  # model.hidden_size
    type: Any = str  # what click converts the value to
    note: str = ""  # what the values are, for --help
    literal: bool = False  # a string kept as given (an encoding named "none" stays "none")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def value(self, given: Any) -> Any:
        """The value as --set would read it: "null" is None, "90" is 90, "10m" stays "10m"."""
        from charlm.config import parse_scalar

        return parse_scalar(given) if isinstance(given, str) and not self.literal else given


SHORTCUTS = (
    Shortcut("--cell", "model.cell", note="rnn_tanh | rnn_relu | gru | lstm | mingru | minlstm"),
    Shortcut("--block", "model.block", note="plain | residual (x + cell(norm(x)), then a feed-forward part)"),
    Shortcut("--hidden-size", "model.hidden_size", int),
    Shortcut("--num-layers", "model.num_layers", int),
    Shortcut("--dropout", "model.dropout", float),
    Shortcut("--batch-size", "train.batch_size", int),
    Shortcut("--seq-len", "train.seq_len", int),
    Shortcut("--lr", "train.lr", float),
    Shortcut("--max-steps", "train.max_steps", int),
    Shortcut("--max-epochs", "train.max_epochs", float),
    Shortcut("--max-time", "train.max_time", note="Wall-clock budget: 90s, 10m, 1h30m."),
    Shortcut("--precision", "train.precision", note="auto | fp32 | bf16 | fp16"),
    Shortcut("--device", "train.device", note="auto | cpu | cuda | mps"),
    Shortcut("--threads", "train.threads", int, note="CPU threads (0: torch's choice)."),
    Shortcut("--seed", "train.seed", int),
    Shortcut("--encoding", "data.encoding", note="Text encoding of FILE [default: utf-8].", literal=True),
)


def config_shortcuts(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` one option per ``SHORTCUTS`` entry; it receives ``shortcuts``: the
    (config key, value) pairs of those given."""

    @functools.wraps(command)
    def with_shortcuts(**kwargs: Any) -> Any:
        given = {s: kwargs.pop(s.dest) for s in SHORTCUTS}
        return command(shortcuts=[(s.key, s.value(v)) for s, v in given.items() if v is not None], **kwargs)

    for shortcut in reversed(SHORTCUTS):
        note = f"{shortcut.note} " if shortcut.note else ""
        with_shortcuts = click.option(shortcut.flag, shortcut.dest, type=shortcut.type,
                                      help=f"{note}[--set {shortcut.key}]")(with_shortcuts)
    return with_shortcuts


def decode_escapes(text: str) -> str:
    """``\\n`` and ``\\t`` as typed on a command line, as the characters they stand for."""
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def comma_list(text: str | None, what: str, convert: Callable[[str], Any] = str) -> list:
    if not text:
        return []
    try:
        return [convert(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CharlmError(f"{what} must be a comma-separated list, e.g. 5,20,50; got {text!r}") from None


def make_dir(out: Path) -> Path:
    from charlm.fsutil import describe_os_error

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(describe_os_error(exc, out, "create the directory")) from None
    return out
