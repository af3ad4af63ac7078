"""A text as token ids, read once: the one scan of a text, and its token cache.

A text is a list of documents (one file, or pipe, is a list of one). The first time it is read, one
pass over each document checks it (binary? valid in its encoding? empty?), takes its sha256 and
encodes it, chunk by chunk, into a spool of provisional ids (numbered in order of first
appearance, stored in the smallest type that holds them), so memory stays bounded and a pipe is
read only once. With every character known, the spool is mapped into the cache: a memory-mapped
array of the vocabulary's ids, the documents in their split's order, each preceded by a separator
where one is asked for. What the pass found out (each document's checksum, size and length, and
what it skipped) is cached too: a later run hashes the files and finds both, reading nothing else.
Cache entries are keyed by content, and one whose size or checksum does not match its record is
rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.config import SPLITS
from charlm.data.source import (CHUNK_BYTES, SNIFF_BYTES, Checksum, Document, NotText, Skipped, TextSource, gather,
                                iter_text, nul_is_binary)
from charlm.data.vocab import MARKERS, Vocab, codepoints_of, format_chars, smallest_dtype
from charlm.errors import CharlmError
from charlm.fsutil import atomic_open, atomic_write_text, sha256_of

CACHE_FORMAT = 2
CACHE_OPTION = "data.cache_dir"  # what moves the token cache, for error messages
BAR_FILES, BAR_BYTES = 200, 4 * CHUNK_BYTES  # a progress bar from this many files or bytes on


@dataclass
class Entry:
    """One document that made it in: its manifest line, and the split it belongs to."""

    document: Document
    size: int
    sha256: str
    chars: int
    split: str = "train"


@dataclass(frozen=True)
class Joining:
    """How the documents of a set join into one stream: ``token`` before each, or only between them."""

    token: str
    before_first: bool


@dataclass(frozen=True)
class Holdout:
    """Hold out whole documents: ``val`` and ``test`` shares of the characters, files drawn by ``seed``."""

    val: float
    test: float
    seed: int


@dataclass
class Tokens:
    """A text as one array of token ids (memory-mapped from the cache)."""

    tokens: np.ndarray
    vocab: Vocab
    sha256: str  # of the file, or for a set of documents of its manifest
    unknown: int  # characters left out because the vocabulary lacks them
    entries: list[Entry]  # in the order of ``tokens``
    skipped: Skipped
    bounds: tuple[int, int] | None  # whole documents held out: where val and test start in ``tokens``
    single: bool  # one text, not a set of documents

    @property
    def size(self) -> int:
        """Bytes read from disk."""
        return sum(entry.size for entry in self.entries)

    def manifest(self) -> str | None:
        """``files.txt`` of a set: each file's sha256, bytes, split and name; then what was skipped."""
        if self.single:
            return None
        lines = ["# sha256 bytes split path: the files this run reads, in the order it reads them"]
        lines += [f"{e.sha256} {e.size} {e.split} {e.document.name}" for e in self.entries]
        for reason, names in sorted(self.skipped.files.items()):
            lines += [f"# skipped ({reason}): {name}" for name in names]
        return "\n".join(lines) + "\n"

    def counts(self) -> dict[str, dict[str, int]] | None:
        """A set's files and characters by split, e.g. {"train": {"files": 90, "chars": 1234}, ...}."""
        if self.single:
            return None
        result = {name: {"files": 0, "chars": 0} for name in SPLITS}
        for entry in self.entries:
            result[entry.split]["files"] += 1
            result[entry.split]["chars"] += entry.chars
        return result


def read_tokens(source: TextSource, encoding: str = "utf-8", cache_dir: str | Path | None = None,
                vocab: Vocab | None = None, joining: Joining | None = None, split: str = "contiguous",
                holdout: Holdout | None = None, progress: bool = False, chunk_bytes: int | None = None) -> Tokens:
    """``source`` in ``vocab``'s ids (None: the text's own characters) through the cache. ``split``:
    "documents" holds out whole documents as ``holdout`` says, "auto" does so for two usable documents
    or more, "contiguous" keeps them in name order (the caller cuts the stream)."""
    skipped, single = Skipped(), source.single is not None
    documents = gather(source, skipped)
    cache = cache_folder(cache_dir)
    with Pass(cache, encoding, single, progress, chunk_bytes) as reader:
        scan = reader.scan(documents, skipped)
        entries = scan.entries(skipped, source)
        vocab = vocab if vocab is not None else own_vocab(scan.chars, joining)
        if joining is not None and joining.token not in vocab.index:
            raise CharlmError(f"{source} is several documents, but this model was trained on one text: "
                              "give it a single file")
        split = _split(split, len(entries), single, source)
        if split == "documents":
            assign_splits(entries, holdout.val, holdout.test, holdout.seed)
        order = sorted(range(len(entries)), key=lambda i: SPLITS.index(entries[i].split))  # stable: name order
        meta = reader.tokens(scan, [entries[i] for i in order], [scan.usable[i] for i in order], vocab, joining)
    if meta["tokens"] == 0:
        raise CharlmError(f"{source} has no characters in the model's vocabulary ({format_chars(vocab.chars)})")
    tokens = np.memmap(meta["path"], dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["tokens"],))
    ordered = [entries[i] for i in order]
    sha = entries[0].sha256 if single else manifest_sha256(entries)
    return Tokens(tokens, vocab, sha, meta["unknown"], ordered, skipped,
                  tuple(meta["bounds"]) if split == "documents" else None, single)


def _split(split: str, usable: int, single: bool, source: TextSource) -> str:
    if split == "documents" and single:
        raise CharlmError(f"data.split=documents holds out whole files, and {source} is one file: give several"
                          " files or a folder, or use --set data.split=contiguous")
    if split == "documents" and usable < 2:
        raise CharlmError(f"{source} has one usable file: data.split=documents holds out whole files,"
                          " so give several, or use --set data.split=contiguous")
    if split == "auto":
        return "documents" if usable >= 2 else "contiguous"
    return split


def own_vocab(chars: list[str], joining: Joining | None) -> Vocab:
    """A text's own vocabulary: its characters sorted, the separator among them (a line break) or
    after them (a marker)."""
    if joining is None:
        return Vocab(sorted(chars))
    if joining.token in MARKERS:
        return Vocab(sorted(chars) + [joining.token])
    return Vocab(sorted(set(chars) | {joining.token}))


def manifest_sha256(entries: list[Entry]) -> str:
    """A set's checksum: every usable file's sha256, size and name, in name order."""
    lines = "".join(f"{e.sha256} {e.size} {e.document.name}\n" for e in sorted(entries, key=lambda e: e.document.name))
    return hashlib.sha256(lines.encode("utf-8", "surrogatepass")).hexdigest()


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


# ---- the scan ---------------------------------------------------------------------------------

@dataclass
class Scan:
    """What the pass found in each document it read, and the cache key of that."""

    key: str
    documents: list[Document]
    records: list[dict[str, Any]]  # per document: sha256, size, chars, skipped (a reason, or None)
    chars: list[str]  # the characters of the usable documents, sorted

    @property
    def usable(self) -> list[int]:
        return [i for i, record in enumerate(self.records) if record["skipped"] is None]

    def entries(self, skipped: Skipped, source: TextSource) -> list[Entry]:
        """The usable documents as entries; the others go to ``skipped``."""
        entries = []
        for document, record in zip(self.documents, self.records):
            if record["skipped"] is not None:
                skipped.add(record["skipped"], document.name)
            else:
                entries.append(Entry(document, record["size"], record["sha256"], record["chars"]))
        if not entries:
            raise CharlmError(f"{source} holds no usable text" + (f" ({skipped.summary()})" if skipped.summary()
                                                                  else "")
                              + ": give text files, or check --include/--exclude and data.encoding")
        return entries

    def to_json(self) -> str:
        return json.dumps({"format": CACHE_FORMAT, "records": self.records, "chars": self.chars})


def scan_key(encoding: str, single: bool, fingerprints: list[tuple[str, int]]) -> str:
    """A scan's cache key: the files' contents (sha256 and size, in order), the encoding, and whether a
    bad file is an error (one text) or skipped (a set)."""
    key = json.dumps({"format": CACHE_FORMAT, "encoding": encoding, "single": single, "files": fingerprints})
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class Pass:
    """The one pass over a text's documents, and the cache entries it feeds."""

    def __init__(self, cache: Path, encoding: str, single: bool, progress: bool, chunk_bytes: int | None):
        self.cache, self.encoding, self.single = cache, encoding, single
        self.progress, self.chunk_bytes = progress, chunk_bytes
        self.spool: Spool | None = None

    def __enter__(self) -> "Pass":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.spool is not None:
            self.spool.close()

    def scan(self, documents: list[Document], skipped: Skipped) -> Scan:
        """The scan of ``documents``: from the cache when the files are those it saw (regular files are
        hashed first to tell), or else from reading and encoding them, once."""
        if all(_regular(d.path) for d in documents):
            documents, prints = self._fingerprints(documents, skipped)
            cached = _load_scan(self.cache, scan_key(self.encoding, self.single, prints), documents)
            if cached is not None:
                return _checked(cached, self.single, documents)
        return _checked(self._read(documents), self.single, documents)

    def _fingerprints(self, documents: list[Document], skipped: Skipped) -> tuple[list[Document], list]:
        """Each file's sha256 and size, binary files left out (their first bytes tell)."""
        kept, prints = [], []
        for document in _bar(documents, "checking", self.progress):
            try:
                with open(document.path, "rb") as handle:
                    head = handle.read(SNIFF_BYTES)
                if b"\x00" in head and nul_is_binary(self.encoding):
                    if self.single:
                        list(iter_text(document.path, self.encoding))  # raises the binary file's own message
                    skipped.add("binary", document.name)
                    continue
                prints.append((sha256_of(document.path), document.path.stat().st_size))
            except OSError:
                if self.single:
                    raise CharlmError(f"{document.path}: cannot be read; check that it is a readable file") from None
                skipped.add("unreadable", document.name)
                continue
            kept.append(document)
        return kept, prints

    def _read(self, documents: list[Document]) -> Scan:
        self.spool = Spool(self.cache)
        records = [self.spool.add(document, self.encoding, self.single, self.chunk_bytes)
                   for document in _bar(documents, "reading", self.progress)]
        usable = {i for i, record in enumerate(records) if record["skipped"] is None}
        chars = sorted(self.spool.characters(usable))
        key = scan_key(self.encoding, self.single, [(r["sha256"], r["size"]) for r in records])
        scan = Scan(key, documents, records, chars)
        atomic_write_text(self.cache / f"scan-{key}.json", scan.to_json(), CACHE_OPTION)
        return scan

    def tokens(self, scan: Scan, entries: list[Entry], indices: list[int], vocab: Vocab,
               joining: Joining | None) -> dict[str, Any]:
        """The token cache entry of these documents in this order and vocabulary: found, or built
        from the spool (read for it now if this run found the scan cached)."""
        key = json.dumps({"scan": scan.key, "vocab": vocab.to_list(), "order": indices,
                          "joining": None if joining is None else [joining.token, joining.before_first]})
        stem = self.cache / f"tokens-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}"
        tokens_path, meta_path = stem.with_suffix(".tokens"), stem.with_suffix(".json")
        meta = load_json(meta_path)
        if not (meta and tokens_intact(tokens_path, meta)):
            if self.spool is None:
                self._read(scan.documents)
            meta = self.spool.write(entries, indices, vocab, joining, tokens_path)
            atomic_write_text(meta_path, json.dumps(meta), CACHE_OPTION)
        return {**meta, "path": tokens_path}


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # the pass names the problem


def _checked(scan: Scan, single: bool, documents: list[Document]) -> Scan:
    """One text must be usable text: empty or blank is an error, not a skip."""
    if single and scan.records[0]["skipped"] == "empty":
        raise CharlmError(f"{documents[0].path} is empty: give a file with some text in it")
    if single and all(c.isspace() for c in scan.chars):
        raise CharlmError(f"{documents[0].path} contains only whitespace: give a file with some text in it")
    return scan


RECORD_KEYS = {"sha256", "size", "chars", "skipped"}


def _load_scan(cache: Path, key: str, documents: list[Document]) -> Scan | None:
    """The cached scan of these documents, if there is one that reads back whole."""
    saved = load_json(cache / f"scan-{key}.json")
    records = saved.get("records") if saved and saved.get("format") == CACHE_FORMAT else None
    if not isinstance(records, list) or len(records) != len(documents) or not isinstance(saved.get("chars"), list) \
            or not all(isinstance(r, dict) and RECORD_KEYS <= r.keys() for r in records):
        return None
    return Scan(key, documents, records, saved["chars"])


def _bar(documents: list[Document], what: str, progress: bool) -> Any:
    """A progress bar over the documents, by file for a set and shown only for large texts."""
    from tqdm import tqdm

    large = len(documents) >= BAR_FILES or sum(_size(d.path) for d in documents) >= BAR_BYTES
    name = documents[0].path.name if len(documents) == 1 else "files"
    return tqdm(documents, desc=f"{what} {name}", unit="file", disable=not (progress and large), leave=False)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---- the spool: the text in provisional ids -----------------------------------------------------

class Spool:
    """The documents of one pass as provisional ids (each character numbered when first seen), chunk
    by chunk, in a temporary file of the cache folder that is removed when done."""

    def __init__(self, folder: Path):
        fd, name = tempfile.mkstemp(prefix=".spool-", suffix=".tmp", dir=folder)
        self.path, self.handle = Path(name), os.fdopen(fd, "w+b")
        self.ids = np.full(0x110000, -1, dtype=np.int32)  # code point -> provisional id
        self.codepoints: list[int] = []  # provisional id -> code point
        self.chunks: list[list[tuple[int, int, np.dtype]]] = []  # per document: (offset, count, dtype)
        self.counts: list[np.ndarray] = []  # per document: how often each provisional id occurs

    def close(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)

    def add(self, document: Document, encoding: str, strict: bool, chunk_bytes: int | None) -> dict[str, Any]:
        """Read one document into the spool: its record (a skip reason where it is not usable text)."""
        start, checksum = self.handle.tell(), Checksum()
        chunks: list[tuple[int, int, np.dtype]] = []
        counts = np.zeros(0, dtype=np.int64)
        try:
            for text in iter_text(document.path, encoding, chunk_bytes or CHUNK_BYTES, checksum):
                ids = self._provisional(codepoints_of(text))
                dtype = smallest_dtype(len(self.codepoints))
                chunks.append((self.handle.tell(), len(ids), dtype))
                self.handle.write(ids.astype(dtype).tobytes())
                counts = _add_counts(counts, np.bincount(ids, minlength=len(self.codepoints)))
            reason = None if counts.sum() else "empty"
        except NotText as exc:
            if strict:
                raise
            reason = exc.reason
        except (OSError, CharlmError):
            if strict:
                raise
            reason = "unreadable"
        sha, size = checksum.hexdigest(), checksum.size
        if reason is not None:  # nothing of it stays in the spool; its checksum is the whole file's, as hashed
            self.handle.seek(start)
            self.handle.truncate()
            chunks, counts = [], np.zeros(0, dtype=np.int64)
            if _regular(document.path):  # a pipe cannot be read again
                with contextlib.suppress(OSError):
                    sha, size = sha256_of(document.path), document.path.stat().st_size
        self.chunks.append(chunks)
        self.counts.append(counts)
        return {"sha256": sha, "size": size, "chars": int(counts.sum()), "skipped": reason}

    def _provisional(self, codepoints: np.ndarray) -> np.ndarray:
        ids = self.ids[codepoints]
        if (ids < 0).any():
            new = np.unique(codepoints[ids < 0])
            self.ids[new] = np.arange(len(self.codepoints), len(self.codepoints) + len(new))
            self.codepoints.extend(new.tolist())
            ids = self.ids[codepoints]
        return ids

    def characters(self, documents: set[int]) -> set[str]:
        """The characters that occur in ``documents`` (by index)."""
        seen: set[str] = set()
        for index in documents:
            seen.update(chr(self.codepoints[i]) for i in np.flatnonzero(self.counts[index]))
        return seen

    def write(self, entries: list[Entry], indices: list[int], vocab: Vocab, joining: Joining | None,
              path: Path) -> dict[str, Any]:
        """Documents ``indices`` (with their ``entries``) into a token file of ``vocab``'s ids; its metadata."""
        self.handle.flush()
        # Provisional id -> the vocabulary's (-1: a character it lacks), in the smallest type that holds both.
        table = np.array([vocab.index.get(chr(c), -1) for c in self.codepoints] or [-1],
                         dtype=np.int32 if len(vocab) < 2**31 else np.int64)
        separator = None if joining is None else np.array([vocab.index[joining.token]], dtype=vocab.dtype)
        digest, count, unknown, starts = hashlib.sha256(), 0, 0, {}
        with atomic_open(path, "wb", CACHE_OPTION) as out:
            def write(piece: np.ndarray) -> None:
                nonlocal count
                raw = piece.tobytes()
                digest.update(raw)
                out.write(raw)
                count += len(piece)

            for position, (entry, index) in enumerate(zip(entries, indices)):
                starts.setdefault(entry.split, count)
                if separator is not None and (joining.before_first or position):
                    write(separator)
                for offset, length, dtype in self.chunks[index]:  # one chunk in memory at a time
                    mapped = table[np.fromfile(self.path, dtype=dtype, count=length, offset=offset)]
                    known = mapped[mapped >= 0]
                    unknown += length - len(known)
                    write(known.astype(vocab.dtype))
        bounds = [starts.get("val", starts.get("test", count)), starts.get("test", count)]
        return {"format": CACHE_FORMAT, "dtype": vocab.dtype.name, "tokens": count, "unknown": unknown,
                "bounds": bounds, "tokens_sha256": digest.hexdigest()}


def _add_counts(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    if len(total) < len(more):
        total = np.concatenate([total, np.zeros(len(more) - len(total), dtype=np.int64)])
    total[: len(more)] += more
    return total


# ---- the cache folder ---------------------------------------------------------------------------

def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charlm" / "tokens"


def cache_folder(cache_dir: str | Path | None) -> Path:
    """The token cache's folder (``data.cache_dir``, else the default), created if need be."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(f"cannot create the token cache {cache}: {exc.strerror}; set data.cache_dir") from None
    return cache


def load_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def tokens_intact(tokens_path: Path, meta: dict) -> bool:
    """Whether a cache entry's token file is the one its metadata describes (format, size, checksum)."""
    try:
        if meta.get("format") != CACHE_FORMAT:
            return False
        if tokens_path.stat().st_size != meta["tokens"] * np.dtype(meta["dtype"]).itemsize:
            return False
        return sha256_of(tokens_path) == meta["tokens_sha256"]
    except (OSError, KeyError, TypeError):
        return False
