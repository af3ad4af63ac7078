"""The text and its batches: a text read once, cut into splits and into training batches.

The chain, in the order a run goes through it:

- ``source``: which files a run reads (one file, a pipe, folders and globs) and decoding them;
- ``tokens``: reading them once into token ids, the spool and the token cache;
- ``vocab``: the vocabulary and its markers;
- ``base``: the one interface both kinds share (``RunData``, ``Part``, ``Batches``);
- ``stream``: a text read as one long stream, cut into contiguous windows (``StreamBatches.batch``);
- ``lines``: a list, one example per line, each read from a fresh state (``LineBatches.batch``);
- ``synthetic``: text of our own for tests and benchmarks.

``read_data`` is the way in: it reads a text as its config says, in the kind ``data.mode`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy stays out of the command line's start (the kinds import it)
    from charlm.config import DataConfig
    from charlm.data.base import RunData
    from charlm.data.source import TextSource
    from charlm.data.vocab import Vocab


def kind(mode: str) -> "type[RunData]":
    """The kind of data ``data.mode`` names."""
    from charlm.data.lines import LineData
    from charlm.data.stream import StreamData

    return {"stream": StreamData, "lines": LineData}[mode]


def read_data(source: "TextSource | str | Path", config: "DataConfig", vocab: "Vocab | None" = None,
              progress: bool = False) -> "RunData":
    """A run's text: ``source`` (a file, or many: see ``charlm.data.source``) read as ``config`` says, in
    ``vocab`` (a run's own) or else the text's own characters."""
    from charlm.data.source import TextSource

    return kind(config.mode).read(TextSource.of(source, config.include, config.exclude), config, vocab, progress)


__all__ = ["kind", "read_data"]
