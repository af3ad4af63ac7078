import numpy as np
import pytest

from charlm.data.vocab import DOCUMENT, Vocab, smallest_dtype


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
    assert [smallest_dtype(n) for n in (256, 257, 65536, 65537)] == [np.uint8, np.uint16, np.uint16, np.uint32]


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


def test_a_marker_is_in_the_vocabulary_but_no_character_encodes_to_it():
    vocab = Vocab(["a", "b", DOCUMENT])
    assert vocab.decode([2, 0, 2, 1]) == "ab"  # never printed
    assert vocab.encode("ab").tolist() == [0, 1]  # no character encodes to it, not even the string "<doc>"
    assert set(vocab.missing("<doc>")) == set("<doc>")
    with pytest.raises(ValueError, match="distinct single characters"):
        Vocab(["a", "ab"])
