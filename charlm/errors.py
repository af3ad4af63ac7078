"""The one exception type that the CLI turns into a single line on stderr."""

from __future__ import annotations


class CharlmError(Exception):
    """A problem with the user's input or environment, with a hint on what to do.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback
    (unless ``--debug``). Anything else that escapes is a bug in charlm.
    """
