"""Many files as one text: folders, globs and lists of paths, one document per file.

``TextSource`` is what a run was asked to read. One regular file keeps the single-file path of
``charlm.data``; anything else (several paths, a folder, a glob) is a set of documents:

- ``gather`` lists its files: folders recursively (symbolic links to folders are not followed, so
  a link loop cannot trap it), hidden files and folders skipped, ``include``/``exclude`` globs
  applied to each file's path inside the folder given, duplicates dropped, sorted by that path so
  a run is reproducible;
- ``load_documents`` reads them (chunk by chunk: memory stays bounded however large the tree),
  skips files that are empty or not text in ``data.encoding`` (counted, never a crash), and
  encodes the rest through the disk cache into one token stream. In stream mode each file is
  preceded by the document marker (``charlm.data.DOCUMENT``, a vocabulary entry no character can
  be), so the model learns where a document starts and ends; with ``data.split: documents`` the
  files of each split are stored together, train first, so the held-out part is whole files and
  the split is a cut at a document boundary. In lines mode files are joined by line breaks: every
  line of every file is an example.

The checksum of a set covers every file's path, size and sha256 (the manifest, written to the run
directory as ``files.txt``), so adding, changing or removing a file is seen on ``--resume``.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charlm.data import (CACHE_FORMAT, CACHE_OPTION, DOCUMENT, NotText, Vocab, cache_folder, format_chars,
                         iter_text, load_json, tokens_intact)
from charlm.errors import CharlmError
from charlm.fsutil import atomic_open, atomic_write_text

GLOB_CHARACTERS = frozenset("*?[")
SPLIT_NAMES = ("train", "val", "test")


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
    def single_file(self) -> Path | None:
        """The one regular file this source is, or None for a set of documents."""
        if len(self.paths) != 1 or has_glob(self.paths[0]):
            return None
        path = Path(self.paths[0]).expanduser()
        return path if path.is_file() else None

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
    """Files left out, by reason ("hidden", "binary", "not utf-8", "empty", "unreadable"), with names."""

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
    """The files of ``source`` in a sorted, stable order (see the module's docstring)."""
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
    """Every file under ``folder``; hidden files and folders are skipped (and not entered)."""
    documents = []
    for root, folders, files in os.walk(folder, followlinks=False):
        inside = Path(root).relative_to(folder).as_posix()
        prefix = "" if inside == "." else inside + "/"
        for name in [f for f in folders if f.startswith(".")]:
            skipped.add("hidden", f"{shown}/{prefix}{name}/")
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                skipped.add("hidden", f"{shown}/{prefix}{name}")
                continue
            documents.append(Document(Path(root) / name, f"{shown}/{prefix}{name}", prefix + name))
    return documents


# ---- reading and encoding ------------------------------------------------------------------------

@dataclass
class Entry:
    """One file that made it in: its manifest line, and the split it belongs to."""

    document: Document
    size: int
    sha256: str
    chars: int
    split: str = "train"


@dataclass
class DocumentTokens:
    """A set of documents encoded into one token stream (a memory-mapped array of the cache)."""

    tokens: np.ndarray
    vocab: Vocab
    sha256: str  # of the manifest: every file's sha256, size and name
    unknown: int
    entries: list[Entry]
    skipped: Skipped
    bounds: tuple[int, int] | None  # split documents: where val and test start in ``tokens``

    def manifest(self) -> str:
        """``files.txt``: each file's sha256, bytes, split and name; then what was skipped."""
        lines = ["# sha256 bytes split path: the files this run reads, in the order it reads them"]
        lines += [f"{e.sha256} {e.size} {e.split} {e.document.name}" for e in self.entries]
        for reason, names in sorted(self.skipped.files.items()):
            lines += [f"# skipped ({reason}): {name}" for name in names]
        return "\n".join(lines) + "\n"

    def counts(self) -> dict[str, dict[str, int]]:
        """Files and characters of each split, e.g. {"train": {"files": 90, "chars": 1234}, ...}."""
        result = {name: {"files": 0, "chars": 0} for name in SPLIT_NAMES}
        for entry in self.entries:
            result[entry.split]["files"] += 1
            result[entry.split]["chars"] += entry.chars
        return result


def load_documents(source: TextSource, mode: str, split: str, val_fraction: float, test_fraction: float,
                   seed: int, encoding: str = "utf-8", cache_dir: str | Path | None = None, vocab: Vocab | None = None,
                   progress: bool = False, chunk_bytes: int | None = None) -> DocumentTokens:
    """Read and encode ``source``'s files (see the module's docstring). ``split`` is "documents" or
    "contiguous" (then the files stay in name order and the caller cuts the stream), or "auto":
    documents when at least two files are usable, else contiguous."""
    skipped = Skipped()
    documents = gather(source, skipped)
    entries, chars = _scan(documents, encoding, skipped, progress, chunk_bytes)
    if not entries:
        raise CharlmError(f"{source} holds no usable text" + (f" ({skipped.summary()})" if skipped.summary() else "")
                          + ": give text files, or check --include/--exclude and data.encoding")
    manifest_sha = hashlib.sha256("".join(f"{e.sha256} {e.size} {e.document.name}\n" for e in entries)
                                  .encode("utf-8", "surrogatepass")).hexdigest()
    if mode == "lines":  # the files' own characters: the caller cuts lines and maps them to the model's vocabulary
        vocab = Vocab(sorted(chars | {"\n"}))
    elif vocab is None:
        vocab = Vocab(sorted(chars) + [DOCUMENT])
    elif vocab.document is None:
        raise CharlmError(f"{source} is several documents, but this model was trained on one text: "
                          "give it a single file")
    if split == "auto":
        split = "documents" if len(entries) >= 2 else "contiguous"
    if split == "documents":
        if len(entries) < 2:
            raise CharlmError(f"{source} has one usable file: data.split=documents holds out whole files,"
                              " so give several, or use --set data.split=contiguous")
        assign_splits(entries, val_fraction, test_fraction, seed)
    order = sorted(entries, key=lambda e: SPLIT_NAMES.index(e.split))  # stable: name order within a split
    tokens, unknown, bounds = _encoded(order, vocab, mode, encoding, cache_dir, manifest_sha, split, progress,
                                       chunk_bytes)
    return DocumentTokens(tokens, vocab, manifest_sha, unknown, order, skipped,
                          bounds if split == "documents" else None)


def _scan(documents: list[Document], encoding: str, skipped: Skipped, progress: bool,
          chunk_bytes: int | None) -> tuple[list[Entry], set[str]]:
    """Each file's checksum and characters; files that are not usable text are skipped."""
    from tqdm import tqdm

    entries, chars = [], set()
    for document in tqdm(documents, desc="reading files", unit="file", disable=not progress or len(documents) < 200,
                         leave=False):
        try:
            if _looks_binary(document.path, encoding):
                skipped.add("binary", document.name)
                continue
            seen, count, digest = set(), 0, hashlib.sha256()
            for text in iter_text(document.path, encoding, chunk_bytes, digest):
                seen.update(text)
                count += len(text)
            size, sha = document.path.stat().st_size, digest.hexdigest()
        except NotText as exc:
            skipped.add(exc.reason, document.name)
            continue
        except (OSError, CharlmError):
            skipped.add("unreadable", document.name)
            continue
        if count == 0:
            skipped.add("empty", document.name)
            continue
        chars |= seen
        entries.append(Entry(document, size, sha, count))
    return entries, chars


def _looks_binary(path: Path, encoding: str) -> bool:
    """A NUL byte in the first 8 KB, in an encoding where text has none (not UTF-16 or UTF-32)."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return False
    with open(path, "rb") as handle:
        return b"\x00" in handle.read(8192)


def assign_splits(entries: list[Entry], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Hold out whole files: in a seeded random order, files go to test until it holds
    ``test_fraction`` of the characters, then to val until it holds ``val_fraction``; the rest train.
    A split asked for gets at least one file, and train keeps at least one."""
    total = sum(e.chars for e in entries)
    order = np.random.default_rng(seed).permutation(len(entries))
    position = 0
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        held = 0
        while fraction > 0 and position < len(entries) - 1 and (held == 0 or held < fraction * total):
            entry = entries[order[position]]
            entry.split = name
            held += entry.chars
            position += 1


def _encoded(order: list[Entry], vocab: Vocab, mode: str, encoding: str, cache_dir: str | Path | None,
             manifest_sha: str, split: str, progress: bool, chunk_bytes: int | None
             ) -> tuple[np.ndarray, int, tuple[int, int]]:
    """The token stream of ``order`` through the disk cache (keyed by the manifest, the encoding,
    the vocabulary, the mode and the order): (tokens, characters left out, where val and test start)."""
    cache = cache_folder(cache_dir)
    key = json.dumps({"manifest": manifest_sha, "encoding": codecs.lookup(encoding).name, "vocab": vocab.to_list(),
                      "mode": mode, "order": [e.sha256 + e.document.name for e in order]})
    stem = cache / f"set-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}"
    tokens_path, meta_path = stem.with_suffix(".tokens"), stem.with_suffix(".json")
    meta = load_json(meta_path)
    if not (meta and tokens_intact(tokens_path, meta)):
        meta = _write_tokens(order, vocab, mode, encoding, tokens_path, meta_path, progress, chunk_bytes)
    tokens = np.memmap(tokens_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["tokens"],))
    return tokens, meta["unknown"], tuple(meta["bounds"])


def _write_tokens(order: list[Entry], vocab: Vocab, mode: str, encoding: str, tokens_path: Path, meta_path: Path,
                  progress: bool, chunk_bytes: int | None) -> dict:
    """Encode file by file, chunk by chunk, straight into the cache file."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    count = unknown = 0
    starts = {}
    separator = (np.array([vocab.document], dtype=vocab.dtype) if mode == "stream"
                 else vocab.encode("\n"))
    with atomic_open(tokens_path, "wb", CACHE_OPTION) as out, \
            tqdm(total=sum(e.size for e in order), unit="B", unit_scale=True, desc="encoding files",
                 disable=not progress or len(order) < 200, leave=False) as bar:
        def write(ids: np.ndarray) -> None:
            nonlocal count
            raw = ids.astype(vocab.dtype, copy=False).tobytes()
            digest.update(raw)
            out.write(raw)
            count += len(ids)

        for entry in order:
            starts.setdefault(entry.split, count)
            if mode == "stream" or count:  # lines mode: a line break between files, none before the first
                write(separator)
            for text in iter_text(entry.document.path, encoding, chunk_bytes):
                ids = vocab.encode(text, skip_unknown=True)
                unknown += len(text) - len(ids)
                write(ids)
            bar.update(entry.size)
    if count == 0:
        raise CharlmError(f"none of the files has characters in the model's vocabulary ({format_chars(vocab.chars)})")
    bounds = [starts.get("val", starts.get("test", count)), starts.get("test", count)]
    meta = {"format": CACHE_FORMAT, "dtype": vocab.dtype.name, "tokens": count, "unknown": unknown,
            "bounds": bounds, "tokens_sha256": digest.hexdigest()}
    atomic_write_text(meta_path, json.dumps(meta), CACHE_OPTION)
    return meta
