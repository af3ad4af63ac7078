"""The ``charlm`` command: a thin layer over the Python API, one module per command group.

Each command parses its options, calls the API and prints. torch is imported inside the commands,
never at module level, so ``charlm --help`` is instant. Every CharlmError and usage error ends as
one ``error: …`` line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

import click

from charlm.cli.corpus import corpus
from charlm.cli.evaluate import eval_command, info
from charlm.cli.export import export_command
from charlm.cli.inspect import inspect_group
from charlm.cli.sample import sample
from charlm.cli.serve import serve
from charlm.cli.sweep import sweep
from charlm.cli.train import train
from charlm.errors import CharlmError, out_of_memory
from charlm.version import __version__

EXIT_USAGE = 2


def _debug_enabled(argv: list[str] | None) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else argv) or os.environ.get("CHARLM_DEBUG") == "1"


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
        if _debug_enabled(argv):
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
    except Exception as exc:  # a bug, or memory: still one line, unless --debug asks for the traceback
        if _debug_enabled(argv):
            raise
        if (memory := out_of_memory(exc)) is not None:
            print(f"error: {memory}", file=sys.stderr)
            sys.exit(1)
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
      charlm serve runs/shakespeare
    """


for command in (train, sample, serve, export_command, sweep, eval_command, info, inspect_group, corpus):
    cli.add_command(command)

__all__ = ["cli", "main"]
