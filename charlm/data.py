"""Text in, tokens out: reading, the vocabulary, the on-disk token cache, splits and batches.

Where the data is cut into batches: ``StreamBatches.batch`` (training) and ``eval_windows``
(evaluation). Both keep ``batch_size`` contiguous streams so that the hidden state carried from one
window to the next belongs to the text that really came before it.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.errors import CharlmError
from charlm.fsutil import atomic_open, atomic_write_text, sha256_of

CHUNK_BYTES = 16 * 1024 * 1024  # files are read in chunks, so one larger than RAM still works
CACHE_FORMAT = 1
MARKER = "<line>"  # lines mode: marks a line's start and end; a vocabulary entry that no character equals
DOCUMENT = "<doc>"  # many files: comes before each file's text; like MARKER, no character equals it
MARKERS = (MARKER, DOCUMENT)
CACHE_OPTION = "data.cache_dir"  # what moves the token cache, for error messages


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
        self.marker: int | None = self.index.get(MARKER)  # lines mode: the start/end-of-line token
        self.document: int | None = self.index.get(DOCUMENT)  # many files: the start-of-document token
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
        if len(self) <= 256:
            return np.dtype(np.uint8)
        if len(self) <= 65536:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    def missing(self, text: str) -> list[str]:
        """Characters of ``text`` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str, skip_unknown: bool = False) -> np.ndarray:
        """Token ids of ``text``; unknown characters raise ValueError unless skipped."""
        codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
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

    def render(self, ids: "np.ndarray | list[int]") -> str:
        """Like ``decode``, but a line marker shows as a line break (lines mode previews)."""
        return "".join("\n" if int(i) == self.marker else self.chars[int(i)] for i in ids if int(i) != self.document)

    def to_list(self) -> list[str]:
        return list(self.chars)

    def extended(self, chars: list[str]) -> "Vocab":
        """This vocabulary with ``chars`` appended (sorted, skipping known ones); old ids keep."""
        return Vocab(self.chars + sorted(set(chars) - self.index.keys()))

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(sorted(set(text)))


def format_chars(chars: list[str], limit: int = 20) -> str:
    """Characters as the user can read them: repr for invisible ones, with a count past limit."""
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" … and {len(chars) - limit} more" if len(chars) > limit else "")


def _codec(encoding: str) -> str:
    # A UTF-8 byte-order mark is not text: the -sig codec drops it.
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def check_text_file(path: str | Path) -> Path:
    """Resolve ``path`` and fail early, in one line, if it is not a readable regular file."""
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


def iter_text(path: str | Path, encoding: str = "utf-8", chunk_bytes: int | None = None,
              digest: Any = None) -> Iterator[str]:
    """Decode a file chunk by chunk (``CHUNK_BYTES`` each); a bad byte raises NotText naming its offset.
    ``digest`` (e.g. ``hashlib.sha256()``) takes every byte read, for a checksum without a second read."""
    path = check_text_file(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    decoder = codecs.getincrementaldecoder(_codec(encoding))("strict")
    offset = 0
    with open(path, "rb") as handle:
        while True:
            raw = handle.read(chunk_bytes)
            if digest is not None:
                digest.update(raw)
            final = not raw
            if offset == 0 and b"\x00" in raw[:8192] and codecs.lookup(encoding).name == "utf-8":
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


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charlm" / "tokens"


@dataclass
class TokenFile:
    """A text file encoded once into a memory-mapped array of token ids."""

    tokens: np.ndarray  # np.memmap, read-only
    vocab: Vocab
    sha256: str
    unknown: int  # characters skipped because the vocabulary lacks them


def _scan(path: Path, encoding: str, progress: bool) -> tuple[set[str], int]:
    chars: set[str] = set()
    count = 0
    for text in _progress(iter_text(path, encoding), path, "scanning", progress):
        chars.update(text)
        count += len(text)
    return chars, count


def _progress(chunks: Iterator[str], path: Path, what: str, enabled: bool) -> Iterator[str]:
    size = path.stat().st_size
    if not enabled or size < 4 * CHUNK_BYTES:
        yield from chunks
        return
    from tqdm import tqdm

    with tqdm(total=size, unit="B", unit_scale=True, desc=f"{what} {path.name}", leave=False) as bar:
        for text in chunks:
            yield text
            bar.update(len(text.encode("utf-8", "surrogatepass")))


def load_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def load_tokens(
    path: str | Path,
    encoding: str = "utf-8",
    cache_dir: str | Path | None = None,
    vocab: Vocab | None = None,
    progress: bool = True,
) -> TokenFile:
    """Encode ``path`` with ``vocab`` (default: the file's own characters), through the disk cache.

    The cache is keyed by the file's content hash, the encoding and the vocabulary, so a changed
    file or another vocabulary gets its own entry; an entry whose size or checksum does not match
    its metadata is rebuilt rather than trusted.
    """
    path = check_text_file(path)
    cache = cache_folder(cache_dir)
    sha = sha256_of(path)
    codec_name = codecs.lookup(encoding).name

    if vocab is None:
        vocab_meta_path = cache / f"{sha[:32]}-{codec_name}.vocab.json"
        meta = load_json(vocab_meta_path)
        if meta and meta.get("format") == CACHE_FORMAT and meta.get("sha256") == sha:
            vocab = Vocab(meta["vocab"])
        else:
            chars, count = _scan(path, encoding, progress)
            if count == 0:
                raise CharlmError(f"{path} is empty: give a file with some text in it")
            if all(c.isspace() for c in chars):
                raise CharlmError(f"{path} contains only whitespace: give a file with some text in it")
            vocab = Vocab(sorted(chars))
            atomic_write_text(
                vocab_meta_path,
                json.dumps({"format": CACHE_FORMAT, "sha256": sha, "vocab": vocab.to_list(), "chars": count}),
                CACHE_OPTION,
            )

    vocab_key = hashlib.sha256(json.dumps(vocab.to_list()).encode("utf-8", "surrogatepass")).hexdigest()
    stem = cache / f"{sha[:32]}-{codec_name}-{vocab_key[:16]}"
    tokens_path, meta_path = stem.with_suffix(".tokens"), stem.with_suffix(".json")
    meta = load_json(meta_path)
    if not (meta and _cache_entry_ok(tokens_path, meta, sha, vocab)):
        meta = _build_cache(path, encoding, vocab, tokens_path, meta_path, sha, progress)
    tokens = np.memmap(tokens_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["tokens"],)) \
        if meta["tokens"] else np.zeros(0, dtype=vocab.dtype)
    if len(tokens) == 0:
        raise CharlmError(f"{path} has no characters in the model's vocabulary")
    return TokenFile(tokens=tokens, vocab=vocab, sha256=sha, unknown=meta["unknown"])


def _cache_entry_ok(tokens_path: Path, meta: dict, sha: str, vocab: Vocab) -> bool:
    return meta.get("sha256") == sha and meta.get("vocab") == vocab.to_list() and tokens_intact(tokens_path, meta)


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


def cache_folder(cache_dir: str | Path | None) -> Path:
    """The token cache's folder (``data.cache_dir``, else the default), created if need be."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(f"cannot create the token cache {cache}: {exc.strerror}; set data.cache_dir") from None
    return cache


def _build_cache(
    path: Path, encoding: str, vocab: Vocab, tokens_path: Path, meta_path: Path, sha: str, progress: bool
) -> dict:
    count = unknown = 0
    digest = hashlib.sha256()
    with atomic_open(tokens_path, "wb", CACHE_OPTION) as out:
        for text in _progress(iter_text(path, encoding), path, "encoding", progress):
            ids = vocab.encode(text, skip_unknown=True)
            unknown += len(text) - len(ids)
            count += len(ids)
            raw = ids.tobytes()
            digest.update(raw)
            out.write(raw)
    meta = {
        "format": CACHE_FORMAT,
        "sha256": sha,
        "vocab": vocab.to_list(),
        "dtype": vocab.dtype.name,
        "tokens": count,
        "unknown": unknown,
        "tokens_sha256": digest.hexdigest(),
    }
    atomic_write_text(meta_path, json.dumps(meta), CACHE_OPTION)
    return meta


@dataclass
class Splits:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_tokens(tokens: np.ndarray, val_fraction: float, test_fraction: float) -> Splits:
    """Contiguous split: train first, then val, then test (views, no copies).

    With val 0.1 and test 0 this is nanoGPT's split: train = first int(0.9 n) tokens.
    """
    n = len(tokens)
    train_end = int(n * (1.0 - val_fraction - test_fraction))
    val_end = int(n * (1.0 - test_fraction))
    return Splits(train=tokens[:train_end], val=tokens[train_end:val_end], test=tokens[val_end:])


class StreamBatches:
    """``batch_size`` contiguous streams over the training tokens, read in ``seq_len`` windows.

    Stream ``b`` covers tokens ``[b * stream_len, (b + 1) * stream_len)``. Step ``k`` of an epoch
    gives every stream its window ``k``, so the state a stream ends step ``k`` with is the right
    state to start step ``k + 1`` with (truncated BPTT). At each epoch the streams are rotated
    by a seeded offset below ``seq_len`` so that window boundaries fall elsewhere; the caller
    resets the carried state when an epoch begins, because the streams wrap around there.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0):
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.stream_len = len(tokens) // batch_size
        self.steps_per_epoch = (self.stream_len - 1) // seq_len
        if self.steps_per_epoch < 1:
            need = batch_size * (seq_len + 1)
            raise CharlmError(
                f"the training split has {len(tokens):,} characters, too few for batch_size {batch_size}"
                f" x seq_len {seq_len} (needs {need:,}): lower --batch-size or --seq-len, or give more text"
            )
        self._starts = np.arange(batch_size, dtype=np.int64)[:, None] * self.stream_len
        self._window = np.arange(seq_len + 1, dtype=np.int64)[None, :]

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @functools.lru_cache(maxsize=4)
    def epoch_offset(self, epoch: int) -> int:
        if epoch == 0:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(0, self.seq_len))

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, window index) of a global step."""
        return divmod(step, self.steps_per_epoch)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of global step ``step``, each (batch_size, seq_len) int64."""
        epoch, window = self.position(step)
        index = self._starts + (window * self.seq_len + self.epoch_offset(epoch)) + self._window
        index %= len(self.tokens)  # the last stream's rotated tail wraps to the start
        block = np.asarray(self.tokens[index], dtype=np.int64)
        return block[:, :-1], block[:, 1:]


def eval_windows(tokens: np.ndarray, batch_size: int, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut ``tokens`` into at most ``batch_size`` contiguous streams and yield (inputs, targets).

    Every position that has a next character in its stream is predicted exactly once; the
    windows of one stream follow each other so the caller can carry state across them. Streams
    are shortened to one length, which drops fewer than ``batch_size`` trailing characters.
    """
    n = len(tokens)
    streams = max(1, min(batch_size, (n - 1) // max(1, seq_len)))
    stream_len = n // streams
    if stream_len < 2:
        return
    grid = tokens[: streams * stream_len].reshape(streams, stream_len)  # a view: memmaps stay on disk
    for start in range(0, stream_len - 1, seq_len):
        end = min(start + seq_len, stream_len - 1)
        block = np.asarray(grid[:, start : end + 1], dtype=np.int64)
        yield block[:, :-1], block[:, 1:]
