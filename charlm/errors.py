"""The one exception type that the CLI turns into a single line on stderr."""

from __future__ import annotations

import re


class CharlmError(Exception):
    """A problem with the user's input or environment, with a hint on what to do.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback
    (unless ``--debug``). Anything else that escapes is a bug in charlm.
    """

    def __init__(self, message: str):
        # A message quotes what the user gave, which may hold line breaks or control characters;
        # escaped, the message stays one line on the terminal whatever went into it.
        super().__init__("".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode()
                                 for ch in message))


def out_of_memory(exc: BaseException) -> str | None:
    """One line for an allocation the machine refused (CPU RAM or GPU memory), saying what to lower;
    None when ``exc`` is something else."""
    text = str(exc)
    if type(exc).__name__ != "OutOfMemoryError" and "can't allocate memory" not in text \
            and "out of memory" not in text.lower():
        return None
    cpu = re.search(r"allocate (\d+) bytes", text)  # the CPU allocator's wording, then CUDA's
    gpu = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", text)
    size = (f" ({int(cpu.group(1)) / 2**30:,.1f} GiB in one piece)" if cpu else
            f" ({gpu.group(1)} more on the GPU)" if gpu else "")
    return (f"out of memory{size}: the model or a batch is too large for this machine; lower --hidden-size,"
            " --num-layers, --batch-size or --seq-len (or train.eval_batch_size for evaluations)")
