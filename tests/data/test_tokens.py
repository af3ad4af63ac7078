"""A text as token ids, read once (charlm/data/tokens.py): one pass, the cache, sets of documents."""

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charlm.data.tokens as tokens_module
from charlm.data.source import TextSource
from charlm.data.tokens import Holdout, Joining, read_tokens
from charlm.data.vocab import DOCUMENT, Vocab
from charlm.errors import CharlmError
from tests.conftest import make_text
from tests.data.test_source import tree  # noqa: F401  (a fixture)


def load(path, **options):
    return read_tokens(TextSource.of(path), **options)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b"  \n\t \n", "only whitespace"), (b"\x00\x01\x02binary", "binary"),
])
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "f.txt"
    path.write_bytes(content)
    with pytest.raises(CharlmError, match=message):
        load(path, cache_dir=tmp_path / "cache")
    with pytest.raises(CharlmError, match=message):  # the same once its scan is cached
        load(path, cache_dir=tmp_path / "cache")


def test_the_cache_is_reused_and_a_changed_file_gets_its_own(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabd" * 100)
    cache = tmp_path / "cache"
    first = load(path, cache_dir=cache)
    assert first.vocab.chars == ["a", "b", "c", "d"] and isinstance(first.tokens, np.memmap)
    token_files = list(cache.glob("*.tokens"))
    assert len(token_files) == 1
    mtime = token_files[0].stat().st_mtime_ns
    second = load(path, cache_dir=cache)
    assert token_files[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert np.array_equal(first.tokens, second.tokens) and first.sha256 == second.sha256
    path.write_text("xyz" * 50)  # changed content: a new entry
    third = load(path, cache_dir=cache)
    assert third.vocab.chars == ["x", "y", "z"] and len(list(cache.glob("*.tokens"))) == 2
    assert not list(cache.glob(".*.tmp"))  # the spool is gone


def test_a_text_found_in_the_cache_is_hashed_not_read(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text(make_text(5000))
    load(path, cache_dir=tmp_path / "cache")
    passes = []
    add = tokens_module.Spool.add
    monkeypatch.setattr(tokens_module.Spool, "add", lambda *a, **k: passes.append(1) or add(*a, **k))
    load(path, cache_dir=tmp_path / "cache")
    assert passes == []
    load(path, cache_dir=tmp_path / "cache", vocab=Vocab.from_text("the cat"))  # another vocabulary: one pass
    assert passes == [1]


def test_a_corrupted_cache_is_rebuilt(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello there " * 50)
    cache = tmp_path / "cache"
    good = np.array(load(path, cache_dir=cache).tokens)
    token_file = next(cache.glob("*.tokens"))
    raw = bytearray(token_file.read_bytes())
    raw[3] ^= 0x01  # one flipped bit, same size
    token_file.write_bytes(bytes(raw))
    assert np.array_equal(load(path, cache_dir=cache).tokens, good)
    token_file.write_bytes(bytes(raw[:10]))  # truncated
    assert np.array_equal(load(path, cache_dir=cache).tokens, good)
    next(cache.glob("scan-*.json")).write_text("{not json")
    assert np.array_equal(load(path, cache_dir=cache).tokens, good)


def test_a_foreign_vocabulary_counts_what_it_lacks(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcxyz")
    loaded = load(path, cache_dir=tmp_path / "c", vocab=Vocab.from_text("abc"))
    assert loaded.unknown == 3 and list(loaded.tokens) == [0, 1, 2]
    with pytest.raises(CharlmError, match="has no characters in the model's vocabulary"):
        load(path, cache_dir=tmp_path / "c", vocab=Vocab.from_text("q"))


def test_a_text_is_read_in_chunks_with_a_progress_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tokens_module, "BAR_BYTES", 1024)
    path = tmp_path / "big.txt"
    text = "".join(f"line {i}: naïve café\n" for i in range(3000))
    path.write_text(text, encoding="utf-8")
    seen: list[int] = []
    codepoints = tokens_module.codepoints_of
    monkeypatch.setattr(tokens_module, "codepoints_of", lambda chunk: seen.append(len(chunk)) or codepoints(chunk))
    loaded = load(path, cache_dir=tmp_path / "cache", progress=True, chunk_bytes=1024)
    assert len(seen) > 50 and max(seen) <= 1024  # never the whole file at once
    assert loaded.vocab.decode(loaded.tokens) == text
    assert "reading big.txt" in capsys.readouterr().err


def test_a_pipe_is_read_once_and_trains_like_a_file(tmp_path):
    text = make_text(30_000)
    pipe = tmp_path / "fifo"
    os.mkfifo(pipe)

    def write():
        with open(pipe, "w", encoding="utf-8") as out:
            out.write(text)

    writer = threading.Thread(target=write)
    writer.start()
    piped = load(pipe, cache_dir=tmp_path / "cache")
    writer.join(timeout=10)
    assert piped.vocab.decode(piped.tokens) == text and piped.size == len(text.encode())
    plain = tmp_path / "plain.txt"
    plain.write_text(text)
    assert piped.sha256 == load(plain, cache_dir=tmp_path / "cache").sha256  # the same text, the same checksum


def test_a_set_skips_what_is_not_text_and_lists_what_it_read(tree):  # noqa: F811
    loaded = read_tokens(TextSource.of(tree), joining=Joining(DOCUMENT, True), split="documents",
                         holdout=Holdout(0.2, 0.0, 1), cache_dir=tree.parent / "c")
    assert sorted(e.document.inner for e in loaded.entries) == [
        "a.py", "b.py", "notes.txt", "pkg/c.py", "pkg/sub/d.py", "tests/test_e.py"]
    assert loaded.skipped.summary() == "skipped 1 binary, 1 empty, 2 hidden, 1 not utf-8, 1 special"
    assert f"# skipped (not utf-8): {tree}/latin.txt" in loaded.manifest()
    again = read_tokens(TextSource.of(tree), joining=Joining(DOCUMENT, True), split="documents",
                        holdout=Holdout(0.2, 0.0, 1), cache_dir=tree.parent / "c")
    assert again.skipped.summary() == loaded.skipped.summary() and again.sha256 == loaded.sha256  # from the cache
    single = load(tree / "a.py")
    assert single.manifest() is None and single.counts() is None and single.bounds is None


def test_a_set_found_in_the_cache_is_hashed_not_read(tree, monkeypatch):  # noqa: F811
    options = {"joining": Joining(DOCUMENT, True), "cache_dir": tree.parent / "c"}
    first = read_tokens(TextSource.of(tree), **options, chunk_bytes=8)  # one not utf-8, found in its first chunk
    passes = []
    add = tokens_module.Spool.add
    monkeypatch.setattr(tokens_module.Spool, "add", lambda *a, **k: passes.append(1) or add(*a, **k))
    again = read_tokens(TextSource.of(tree), **options)
    assert passes == [] and again.sha256 == first.sha256 and again.skipped.summary() == first.skipped.summary()


def test_a_folder_without_text_is_one_clear_error(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.dat").write_bytes(b"\x00\x01" * 100)
    with pytest.raises(CharlmError, match="holds no usable text \\(skipped 1 binary file\\)"):
        read_tokens(TextSource.of(tmp_path / "bin"), cache_dir=tmp_path / "c")


def test_documents_held_out_are_whole_and_each_starts_at_its_marker(tree):  # noqa: F811
    loaded = read_tokens(TextSource.of(tree), joining=Joining(DOCUMENT, True), split="documents",
                         holdout=Holdout(0.2, 0.15, 1), cache_dir=tree.parent / "c")
    stream, marker = np.asarray(loaded.tokens), loaded.vocab.document
    assert loaded.vocab.chars[-1] == DOCUMENT and [e.split for e in loaded.entries] == sorted(
        (e.split for e in loaded.entries), key=("train", "val", "test").index)
    starts = [0, *loaded.bounds, len(stream)]
    for name, (start, end) in zip(("train", "val", "test"), zip(starts, starts[1:])):
        piece = stream[start:end]
        held = [e for e in loaded.entries if e.split == name]
        assert piece[0] == marker and (piece == marker).sum() == len(held) >= 1
        assert loaded.vocab.decode(piece) == "".join(e.document.path.read_text() for e in held)


def test_a_set_joined_by_line_breaks(tmp_path):
    root = tmp_path / "lists"
    root.mkdir()
    (root / "a.txt").write_text("anna\nbob")
    (root / "b.txt").write_text("carl\n")
    loaded = read_tokens(TextSource.of(root), joining=Joining("\n", False), cache_dir=tmp_path / "c")
    assert loaded.vocab.decode(loaded.tokens) == "anna\nbob\ncarl\n"


def test_a_changed_file_of_a_set_is_a_new_text(tree, tmp_path):  # noqa: F811
    first = read_tokens(TextSource.of(tree), cache_dir=tmp_path / "cache")
    (tree / "b.py").write_text("changed\n")
    assert read_tokens(TextSource.of(tree), cache_dir=tmp_path / "cache").sha256 != first.sha256


def test_memory_stays_bounded_on_many_small_files(tmp_path, monkeypatch):
    """Files are read and encoded in chunks (capped here at 256 bytes), never a whole file or the
    whole tree at once; the tokens go straight to the memory-mapped cache."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(300):
        (root / f"f{i:03d}.txt").write_text(make_text(1500, seed=i))
    seen = []
    codepoints = tokens_module.codepoints_of
    monkeypatch.setattr(tokens_module, "codepoints_of", lambda chunk: seen.append(len(chunk)) or codepoints(chunk))
    loaded = read_tokens(TextSource.of(root), joining=Joining(DOCUMENT, True), cache_dir=tmp_path / "c",
                         chunk_bytes=256)
    assert isinstance(loaded.tokens, np.memmap) and len(loaded.entries) == 300
    assert max(seen) <= 256 and len(seen) > 300 * 5


# ---- fuzzing: any file either loads or fails with one clean line ------------------------------

def _load_bytes(data: bytes, encoding: str = "utf-8"):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.txt"
        path.write_bytes(data)
        try:
            loaded = load(path, encoding=encoding, cache_dir=Path(folder) / "cache")
            return loaded.vocab.decode(np.asarray(loaded.tokens))
        except CharlmError as exc:
            assert str(exc) and "\n" not in str(exc)
            return None


@settings(deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252", "ascii"]))
def test_fuzz_any_bytes_load_or_fail_cleanly(data, encoding):
    _load_bytes(data, encoding)


@settings(deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_fuzz_any_text_round_trips_through_the_token_cache(text):
    decoded = _load_bytes(text.encode("utf-8", "surrogatepass"))
    if decoded is None:  # only empty, blank, surrogate-holding or NUL-led texts may be refused
        assert text.isspace() or any(0xD800 <= ord(c) <= 0xDFFF for c in text) or "\x00" in text
    else:
        assert decoded == text.removeprefix("\ufeff")


def test_memory_stays_bounded_on_one_large_file(tmp_path):
    """Reading, checking, encoding and writing the cache keep one chunk in memory at a time: a text
    8 times larger, read in the same 64 KB chunks, costs no more memory (a whole copy would cost 8 MB)."""
    import tracemalloc

    def peak(megabytes: int) -> int:
        path = tmp_path / f"text-{megabytes}.txt"
        path.write_text(make_text(megabytes * 1024 * 1024, seed=megabytes))
        tracemalloc.start()
        try:
            loaded = load(path, cache_dir=tmp_path / "c", chunk_bytes=64 * 1024)
            assert len(loaded.tokens) == megabytes * 1024 * 1024
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(1), peak(8)
    assert large - small < 1024 * 1024, (small, large)
