"""The one exception type that the CLI turns into a single line on stderr."""

from __future__ import annotations


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
