"""The characters a model knows, and the two markers that are vocabulary entries but no character."""

from __future__ import annotations

import numpy as np

MARKER = "<line>"  # lines mode: a line's start and end
DOCUMENT = "<doc>"  # many files: comes before each file's text
MARKERS = (MARKER, DOCUMENT)


class Vocab:
    """The characters a model knows; token id = index in ``chars``.

    A fresh vocabulary is the sorted set of a text's characters. One grown by ``--extend-vocab``
    keeps the old ids and appends the new characters, so ``chars`` need not stay sorted.
    """

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 and c not in MARKERS for c in chars):
            raise ValueError("vocabulary must be distinct single characters (and at most the line and document markers)")
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self.marker: int | None = self.index.get(MARKER)
        self.document: int | None = self.index.get(DOCUMENT)
        singles = [(i, c) for i, c in enumerate(self.chars) if c not in MARKERS]
        codepoints = np.array([ord(c) for _, c in singles], dtype=np.uint32)
        order = np.argsort(codepoints, kind="stable")
        self._sorted_codepoints = codepoints[order]
        self._sorted_ids = np.array([i for i, _ in singles], dtype=np.int64)[order]

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.chars == self.chars

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned integer type that holds every token id."""
        return smallest_dtype(len(self))

    def missing(self, text: str) -> list[str]:
        """Characters of ``text`` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str, skip_unknown: bool = False) -> np.ndarray:
        """Token ids of ``text``; unknown characters raise ValueError unless skipped."""
        codepoints = codepoints_of(text)
        if len(self._sorted_ids) == 0:
            ids = np.zeros(len(codepoints), dtype=np.int64)
            known = np.zeros(len(codepoints), dtype=bool)
        else:
            position = np.minimum(np.searchsorted(self._sorted_codepoints, codepoints), len(self._sorted_ids) - 1)
            known = self._sorted_codepoints[position] == codepoints
            ids = self._sorted_ids[position]
        if not known.all():
            if not skip_unknown:
                raise ValueError(f"characters not in the vocabulary: {format_chars(self.missing(text))}")
            ids = ids[known]
        return ids.astype(self.dtype)

    def decode(self, ids: "np.ndarray | list[int]") -> str:
        """The text of ``ids``; the line and document markers are never printed."""
        return "".join(self.chars[int(i)] for i in ids if int(i) not in (self.marker, self.document))

    def to_list(self) -> list[str]:
        return list(self.chars)

    def extended(self, chars: list[str]) -> "Vocab":
        """This vocabulary with ``chars`` appended (sorted, skipping known ones); old ids keep."""
        return Vocab(self.chars + sorted(set(chars) - self.index.keys()))

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(sorted(set(text)))


def codepoints_of(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` (lone surrogates included), as uint32."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def smallest_dtype(count: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 to ``count - 1``."""
    if count <= 256:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if count <= 65536 else np.dtype(np.uint32)


def format_chars(chars: list[str], limit: int = 20) -> str:
    """Characters as the user can read them: repr for invisible ones, with a count past limit."""
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" … and {len(chars) - limit} more" if len(chars) > limit else "")
