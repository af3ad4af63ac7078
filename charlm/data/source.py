"""What a run reads, found on disk and decoded: one text file (or a pipe), or many files.

``TextSource`` is what a run was asked to read: paths (files, folders, globs) and the globs that
filter folders' files. ``gather`` lists its documents: folders recursively (symbolic links to
folders are not followed, so a link loop cannot trap it), hidden files and folders skipped,
``include``/``exclude`` applied to each file's path inside the folder given, duplicates dropped,
sorted by that path so a run is reproducible. ``iter_text`` decodes one file chunk by chunk, so
memory stays bounded however large it is.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError

CHUNK_BYTES = 16 * 1024 * 1024  # files are read in chunks, so one larger than RAM still works
SNIFF_BYTES = 8192  # a NUL byte among the first this many marks a binary file
GLOB_CHARACTERS = frozenset("*?[")


def has_glob(path: str) -> bool:
    return any(ch in GLOB_CHARACTERS for ch in path)


@dataclass(frozen=True)
class TextSource:
    """The paths a run reads (files, folders, globs) and the globs that filter folders' files."""

    paths: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, value: "str | Path | Sequence[str | Path] | TextSource", include: Sequence[str] = (),
           exclude: Sequence[str] = ()) -> "TextSource":
        if isinstance(value, TextSource):
            return value
        paths = [value] if isinstance(value, (str, Path)) else list(value)
        if not paths:
            raise CharlmError("no text to train on: give a FILE, a folder or a glob")
        return cls(tuple(str(p) for p in paths), tuple(include), tuple(exclude))

    @property
    def single(self) -> Path | None:
        """The one text this source is (a file, or a pipe such as ``<(zcat text.gz)``), or None for a
        set of documents (several paths, a folder or a glob)."""
        if len(self.paths) != 1 or has_glob(self.paths[0]):
            return None
        path = Path(self.paths[0]).expanduser()
        return None if path.is_dir() else path

    @property
    def name(self) -> str:
        """Short, for messages and run names: the first path's name (+ how many more)."""
        first = Path(self.paths[0]).name or self.paths[0]
        return first + (f" (+{len(self.paths) - 1} more)" if len(self.paths) > 1 else "")

    @property
    def stem(self) -> str:
        first = self.paths[0].rstrip("/")
        return Path(first).stem if not has_glob(first) else "documents"

    def absolute(self) -> "TextSource":
        """The same source with absolute paths (globs stay patterns), valid from any working folder."""
        return TextSource(tuple(os.path.abspath(os.path.expanduser(p)) for p in self.paths), self.include, self.exclude)

    def to_dict(self) -> dict[str, list[str]]:
        return {"paths": list(self.paths), "include": list(self.include), "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, saved: dict[str, list[str]]) -> "TextSource":
        return cls(tuple(saved["paths"]), tuple(saved.get("include", ())), tuple(saved.get("exclude", ())))

    def config_value(self) -> str | list[str]:
        """What ``data.path`` records: the path, or the list of them."""
        return self.paths[0] if len(self.paths) == 1 else list(self.paths)

    def __str__(self) -> str:
        return ", ".join(self.paths)


@dataclass(frozen=True)
class Document:
    path: Path  # where to read it
    name: str  # as the user knows it: the folder given, then its path inside (files.txt, messages)
    inner: str  # its path inside the folder given (what include/exclude match), or its name


@dataclass
class Skipped:
    """Files left out, by reason ("hidden", "binary", "not utf-8", "empty", "unreadable", "special"), with names."""

    files: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, name: str) -> None:
        self.files.setdefault(reason, []).append(name)

    def summary(self) -> str | None:
        """e.g. "skipped 12 binary, 3 not utf-8, 2 hidden" or "skipped 1 binary file"; None when
        nothing was skipped."""
        if not self.files:
            return None
        parts = [f"{len(names):,} {reason}" for reason, names in sorted(self.files.items())]
        if len(parts) == 1:
            parts[0] += " file" if sum(map(len, self.files.values())) == 1 else " files"
        return "skipped " + ", ".join(parts)


def matches(inner: str, patterns: Sequence[str]) -> bool:
    """Whether a file's path inside its folder matches one of ``patterns``: a pattern with a slash
    matches the whole path, folder by folder (``*`` stays inside one name, ``**`` spans any number
    of folders, so ``tests/**`` is everything under tests/); one without a slash matches the file
    name alone (``*.py`` anywhere)."""
    parts = inner.split("/")
    return any(_match_parts(parts, p.strip("/").split("/")) if "/" in p.strip("/")
               else fnmatch.fnmatchcase(parts[-1], p) for p in patterns)


def _match_parts(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_parts(parts[i:], rest) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match_parts(parts[1:], rest)


def gather(source: TextSource, skipped: Skipped | None = None) -> list[Document]:
    """The documents of ``source``: the one text, or the files of a set in a sorted, stable order."""
    if source.single is not None:
        path = check_text_file(source.single)
        return [Document(path, source.paths[0], path.name)]
    skipped = skipped if skipped is not None else Skipped()
    found: dict[str, Document] = {}
    for given in source.paths:
        for document in _expand(given, skipped):
            if source.include and not matches(document.inner, source.include):
                continue
            if source.exclude and matches(document.inner, source.exclude):
                continue
            try:
                key = str(document.path.resolve(strict=True))
            except (OSError, RuntimeError):  # a broken link, or a loop of links
                skipped.add("unreadable", document.name)
                continue
            found.setdefault(key, document)
    return sorted(found.values(), key=lambda d: d.name)


def _expand(given: str, skipped: Skipped) -> list[Document]:
    path = Path(given).expanduser()
    if path.is_dir():
        return _walk(path, given.rstrip("/") or "/", skipped)
    if path.exists() or path.is_symlink():
        return [Document(path, given, path.name)]
    if not has_glob(given):
        raise CharlmError(f"{given}: no such file or folder; give text files, folders or globs (quote them)")
    pattern = Path(os.path.expanduser(given)).parts
    fixed = next(i for i, part in enumerate(pattern) if has_glob(part))
    base = Path(*pattern[:fixed]) if fixed else Path(".")
    # Walked rather than globbed: glob follows links to folders, so a link loop would multiply the files.
    hits = [d for d in (_walk(base, str(base), Skipped()) if base.is_dir() else [])
            if _match_parts(d.inner.split("/"), list(pattern[fixed:]))]
    if not hits:
        raise CharlmError(f"{given} matches no file: check the pattern (quote it so the shell leaves it alone)")
    return hits


def _walk(folder: Path, shown: str, skipped: Skipped) -> list[Document]:
    """Every file under ``folder``; hidden files and folders are skipped (and not entered), and so are
    pipes, sockets and devices (opening a pipe inside a tree would wait for a writer)."""
    documents = []
    for root, folders, files in os.walk(folder, followlinks=False):
        inside = Path(root).relative_to(folder).as_posix()
        prefix = "" if inside == "." else inside + "/"
        for name in [f for f in folders if f.startswith(".")]:
            skipped.add("hidden", f"{shown}/{prefix}{name}/")
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith("."):
                skipped.add("hidden", f"{shown}/{prefix}{name}")
            elif not path.is_file() and not path.is_symlink():
                skipped.add("special", f"{shown}/{prefix}{name}")
            else:
                documents.append(Document(path, f"{shown}/{prefix}{name}", prefix + name))
    return documents


# ---- decoding ---------------------------------------------------------------------------------

def check_text_file(path: str | Path) -> Path:
    """Resolve ``path`` and fail early, in one line, if it is not a readable file (or pipe)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CharlmError(f"{path}: no such file; give the path of a text file, or --corpus NAME")
    if path.is_dir():
        raise CharlmError(f"{path} is a directory: give a text file inside it")
    if not os.access(path, os.R_OK):
        raise CharlmError(f"{path}: permission denied; make the file readable")
    return path


class NotText(CharlmError):
    """A file that is not text in the encoding asked for; ``reason`` says how ("binary", "not utf-8")."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class Checksum:
    """The sha256 and the size of every byte read."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.size = 0

    def update(self, raw: bytes) -> None:
        self._digest.update(raw)
        self.size += len(raw)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _codec(encoding: str) -> str:
    # A UTF-8 byte-order mark is not text: the -sig codec drops it.
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def nul_is_binary(encoding: str) -> bool:
    """Whether a NUL byte marks a binary file: in every encoding but UTF-16 and UTF-32, text has none."""
    return not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _read(handle: Any, size: int) -> bytes:
    """``size`` bytes, or fewer at the end: a pipe hands out what it has, so read until full."""
    parts, left = [], size
    while left > 0:
        part = handle.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def iter_text(path: str | Path, encoding: str = "utf-8", chunk_bytes: int | None = None,
              digest: Any = None) -> Iterator[str]:
    """Decode a file chunk by chunk (``CHUNK_BYTES`` each); a binary file or a bad byte raises NotText,
    naming the offset. ``digest`` (a ``Checksum``, or e.g. ``hashlib.sha256()``) takes every byte read,
    for a checksum without a second read."""
    path = check_text_file(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    decoder = codecs.getincrementaldecoder(_codec(encoding))("strict")
    offset = 0
    with open(path, "rb") as handle:
        while True:
            raw = _read(handle, chunk_bytes)
            if digest is not None:
                digest.update(raw)
            final = not raw
            if offset == 0 and b"\x00" in raw[:SNIFF_BYTES] and nul_is_binary(encoding):
                raise NotText(
                    f"{path} looks like a binary file (NUL byte at offset {raw.index(0)}): give a text file,"
                    " or --encoding utf-16 if it is UTF-16 text", "binary"
                )
            buffered = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:
                at = offset - buffered + exc.start
                raise NotText(
                    f"{path} is not valid {encoding}: bad byte 0x{exc.object[exc.start]:02x} at offset {at};"
                    " convert it to UTF-8 or pass --encoding (e.g. latin-1, cp1252)", f"not {encoding}"
                ) from None
            except UnicodeError as exc:  # e.g. UTF-16 without a byte-order mark
                raise NotText(
                    f"{path} is not valid {encoding} ({exc}): convert it to UTF-8 or pass the right --encoding",
                    f"not {encoding}"
                ) from None
            if text:
                yield text
            if final:
                return
            offset += len(raw)


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    return "".join(iter_text(path, encoding))
