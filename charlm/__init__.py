"""charlm: train character-level RNN/GRU/LSTM language models and sample from them.

The import is light on purpose (no torch) so that ``charlm --help`` is instant;
``charlm.load`` pulls in torch when it is first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charlm.version import __version__

if TYPE_CHECKING:
    from charlm.api import LanguageModel


def load(path: str, device: str = "cpu") -> "LanguageModel":
    """Load a checkpoint (or a run directory's best.pt) as a ready-to-use model."""
    from charlm.api import load as _load

    return _load(path, device=device)


__all__ = ["__version__", "load"]
