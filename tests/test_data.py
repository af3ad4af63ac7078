import numpy as np
import pytest

from charlm.data import (
    StreamBatches, Vocab, eval_windows, iter_text, load_tokens, read_text, split_tokens,
)
from charlm.errors import CharlmError


@pytest.mark.parametrize("text", [
    "hello world\n", "naïve café — déjà vu", "emoji 🐍🔥 and more 🐍", "中文字符和日本語のテキスト", "a",
])
def test_vocab_round_trip(text):
    vocab = Vocab.from_text(text)
    assert vocab.chars == sorted(set(text))
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert ids.dtype == np.uint8


def test_vocab_dtype_grows_with_size():
    big = Vocab([chr(c) for c in range(0x4E00, 0x4E00 + 300)])
    assert big.dtype == np.uint16
    text = "".join(big.chars[::7])
    assert big.decode(big.encode(text)) == text


def test_unknown_characters():
    vocab = Vocab.from_text("abc")
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("abz")
    assert vocab.decode(vocab.encode("azbzc", skip_unknown=True)) == "abc"
    assert vocab.missing("abxyz") == ["x", "y", "z"]


def test_extended_vocab_keeps_old_ids():
    vocab = Vocab.from_text("dbca")
    grown = vocab.extended(["z", "e", "a"])
    assert grown.chars == ["a", "b", "c", "d", "e", "z"]
    text = "zebra"[:1] + "ace"
    assert grown.decode(grown.encode(text)) == text
    vocab2 = Vocab(["x", "a"])  # unsorted vocabularies (after extension) still encode correctly
    assert list(vocab2.encode("aax")) == [1, 1, 0]


def test_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello".encode("utf-8"))
    assert read_text(path) == "hello"


def test_non_utf8_names_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"abc\nd\xe9f")
    with pytest.raises(CharlmError, match="offset 5") as info:
        read_text(path)
    assert "--encoding" in str(info.value)
    assert read_text(path, encoding="latin-1") == "abc\ndéf"


def test_bad_byte_offset_across_chunks(tmp_path):
    path = tmp_path / "chunks.txt"
    # A valid 2-byte character split across the chunk boundary, then a bad byte later.
    data = b"x" * 9 + "é".encode() + b"yy\xff"
    path.write_bytes(data)
    with pytest.raises(CharlmError, match=f"offset {len(data) - 1}"):
        list(iter_text(path, chunk_bytes=10))
    good = tmp_path / "good.txt"
    good.write_bytes(b"x" * 9 + "é€🐍".encode() * 5)
    assert "".join(iter_text(good, chunk_bytes=10)) == "x" * 9 + "é€🐍" * 5


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b"  \n\t \n", "only whitespace"), (b"\x00\x01\x02binary", "binary"),
])
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "f.txt"
    path.write_bytes(content)
    with pytest.raises(CharlmError, match=message):
        load_tokens(path, cache_dir=tmp_path / "cache")


def test_missing_and_directory(tmp_path):
    with pytest.raises(CharlmError, match="no such file"):
        load_tokens(tmp_path / "nope.txt")
    with pytest.raises(CharlmError, match="is a directory"):
        load_tokens(tmp_path)


def test_token_cache_reused_and_invalidated(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabd" * 100)
    cache = tmp_path / "cache"
    first = load_tokens(path, cache_dir=cache)
    assert first.vocab.chars == ["a", "b", "c", "d"]
    assert isinstance(first.tokens, np.memmap)
    token_files = list(cache.glob("*.tokens"))
    assert len(token_files) == 1
    mtime = token_files[0].stat().st_mtime_ns
    second = load_tokens(path, cache_dir=cache)
    assert token_files[0].stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert np.array_equal(first.tokens, second.tokens)

    path.write_text("xyz" * 50)  # changed content: a new entry
    third = load_tokens(path, cache_dir=cache)
    assert third.vocab.chars == ["x", "y", "z"]
    assert len(list(cache.glob("*.tokens"))) == 2


def test_corrupted_cache_is_rebuilt(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello there " * 50)
    cache = tmp_path / "cache"
    good = np.array(load_tokens(path, cache_dir=cache).tokens)
    token_file = next(cache.glob("*.tokens"))
    raw = bytearray(token_file.read_bytes())
    raw[3] ^= 0x01  # one flipped bit, same size
    token_file.write_bytes(bytes(raw))
    assert np.array_equal(load_tokens(path, cache_dir=cache).tokens, good)
    token_file.write_bytes(bytes(raw[:10]))  # truncated
    assert np.array_equal(load_tokens(path, cache_dir=cache).tokens, good)


def test_cache_with_foreign_vocab_counts_unknown(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcxyz")
    loaded = load_tokens(path, cache_dir=tmp_path / "c", vocab=Vocab.from_text("abc"))
    assert loaded.unknown == 3
    assert list(loaded.tokens) == [0, 1, 2]


def test_split_matches_nanogpt():
    tokens = np.arange(1_115_394)
    splits = split_tokens(tokens, 0.1, 0.0)
    assert len(splits.train) == 1_003_854 and len(splits.val) == 111_540 and len(splits.test) == 0
    three = split_tokens(np.arange(1000), 0.1, 0.05)
    assert (len(three.train), len(three.val), len(three.test)) == (850, 100, 50)
    assert three.train[-1] + 1 == three.val[0] and three.val[-1] + 1 == three.test[0]


def test_split_on_shared_tinyshakespeare(tinyshakespeare, tmp_path):
    loaded = load_tokens(tinyshakespeare, cache_dir=tmp_path)
    assert len(loaded.vocab) == 65
    splits = split_tokens(loaded.tokens, 0.1, 0.0)
    assert (len(splits.train), len(splits.val)) == (1_003_854, 111_540)


def test_each_stream_continues_itself():
    tokens = np.arange(10_000) % 251
    batches = StreamBatches(tokens, batch_size=4, seq_len=16)
    for step in range(batches.steps_per_epoch - 1):
        x0, y0 = batches.batch(step)
        x1, _ = batches.batch(step + 1)
        assert np.array_equal(y0[:, :-1], x0[:, 1:])  # targets are inputs shifted by one
        # stream b of step k+1 starts exactly where stream b of step k stopped
        assert np.array_equal((x0[:, -1] + 1) % 251, x1[:, 0])
        assert np.array_equal(y0[:, -1], x1[:, 0])


def test_streams_are_disjoint_and_epochs_rotate():
    tokens = np.arange(4 * 100)
    batches = StreamBatches(tokens, batch_size=4, seq_len=10)
    first, _ = batches.batch(0)
    assert list(first[:, 0]) == [0, 100, 200, 300]
    assert batches.steps_per_epoch == 9
    epoch1, _ = batches.batch(batches.steps_per_epoch)
    offset = batches.epoch_offset(1)
    assert list(epoch1[:, 0]) == [offset, 100 + offset, 200 + offset, 300 + offset]
    assert batches.epoch_offset(1) == StreamBatches(tokens, 4, 10).epoch_offset(1)  # deterministic


def test_too_short_for_a_batch():
    with pytest.raises(CharlmError, match="lower --batch-size or --seq-len"):
        StreamBatches(np.arange(100), batch_size=8, seq_len=64)


def test_eval_windows_cover_every_prediction_once():
    tokens = np.arange(1003)
    seen = []
    for x, y in eval_windows(tokens, batch_size=4, seq_len=32):
        assert np.array_equal(y, x + 1)
        seen.extend(y.ravel().tolist())
    stream_len = 1003 // 4
    assert len(seen) == 4 * (stream_len - 1)
    assert len(set(seen)) == len(seen)


def test_token_cache_is_built_chunk_by_chunk_with_a_progress_bar(tmp_path, monkeypatch, capsys):
    import charlm.data as data

    monkeypatch.setattr(data, "CHUNK_BYTES", 1024)  # the bar shows from 4 chunks on
    path = tmp_path / "big.txt"
    text = "".join(f"line {i}: naïve café\n" for i in range(3000))
    path.write_text(text, encoding="utf-8")
    seen: list[int] = []
    encode = Vocab.encode

    def spy(self, chunk, skip_unknown=False):
        seen.append(len(chunk))
        return encode(self, chunk, skip_unknown)

    monkeypatch.setattr(Vocab, "encode", spy)
    tokens = load_tokens(path, cache_dir=tmp_path / "cache", progress=True)
    assert len(seen) > 50 and max(seen) <= 1024  # never the whole file at once
    assert tokens.vocab.decode(tokens.tokens) == text
    assert "encoding big.txt" in capsys.readouterr().err


# ---- fuzzing: any file either loads or fails with one clean line ------------------------------

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _load_bytes(data: bytes, encoding: str = "utf-8"):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.txt"
        path.write_bytes(data)
        try:
            loaded = load_tokens(path, encoding, cache_dir=Path(folder) / "cache", progress=False)
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
