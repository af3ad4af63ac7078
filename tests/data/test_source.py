"""What a run reads (charlm/data/source.py): one file or pipe, or a tree's files found, filtered and decoded."""

import os

import pytest

from charlm.data.source import Skipped, TextSource, gather, iter_text, matches, read_text
from charlm.errors import CharlmError
from tests.conftest import make_text


@pytest.fixture
def tree(tmp_path):
    """Text in nested folders, and everything that is not: a binary, a Latin-1 file, hidden files
    and folders, an empty file, a pipe, and a link loop."""
    root = tmp_path / "tree"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / ".git").mkdir()
    for i, name in enumerate(("a.py", "b.py", "pkg/c.py", "pkg/sub/d.py", "tests/test_e.py", "notes.txt")):
        (root / name).write_text(make_text(3000 + 500 * i, seed=i), encoding="utf-8")
    (root / "image.png").write_bytes(bytes(range(256)) * 8)
    (root / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git" / "config").write_text("[core]\n")
    (root / "empty.txt").write_text("")
    os.mkfifo(root / "pkg" / "pipe")  # opening it would wait for a writer: never opened
    os.symlink("..", root / "pkg" / "loop")  # a folder link back up: never followed
    return root


def test_a_tree_lists_its_files_sorted_and_says_what_it_left_out(tree):
    skipped = Skipped()
    documents = gather(TextSource.of(tree), skipped)
    assert [d.inner for d in documents] == ["a.py", "b.py", "empty.txt", "image.png", "latin.txt", "notes.txt",
                                            "pkg/c.py", "pkg/sub/d.py", "tests/test_e.py"]  # content is judged when read
    assert sorted(skipped.files["hidden"]) == [f"{tree}/.env", f"{tree}/.git/"]
    assert skipped.files["special"] == [f"{tree}/pkg/pipe"]
    assert skipped.summary() == "skipped 2 hidden, 1 special"
    one = Skipped()
    one.add("binary", "x")
    assert one.summary() == "skipped 1 binary file"


def test_globs_include_and_exclude(tree):
    only_py = gather(TextSource.of(tree, include=["*.py"], exclude=["tests/**"]))
    assert [d.inner for d in only_py] == ["a.py", "b.py", "pkg/c.py", "pkg/sub/d.py"]
    globbed = gather(TextSource.of(str(tree / "pkg" / "**" / "*.py")))
    assert [d.path.name for d in globbed] == ["c.py", "d.py"]
    several = gather(TextSource.of([tree / "notes.txt", tree / "pkg", tree / "notes.txt"]))
    assert [d.path.name for d in several] == ["notes.txt", "c.py", "d.py"]  # named twice: read once
    assert matches("pkg/sub/d.py", ["pkg/**"]) and matches("pkg/sub/d.py", ["*.py"]) and not matches("a.py", ["pkg/*"])
    with pytest.raises(CharlmError, match="matches no file"):
        gather(TextSource.of(str(tree / "*.rs")))
    with pytest.raises(CharlmError, match="no such file or folder"):
        gather(TextSource.of([tree / "nothing", tree / "a.py"]))


def test_one_path_that_is_no_folder_is_one_text(tree, tmp_path):
    assert TextSource.of(tree / "a.py").single == tree / "a.py"
    assert TextSource.of(tree).single is None and TextSource.of([tree / "a.py", tree / "b.py"]).single is None
    assert TextSource.of(str(tree / "*.py")).single is None
    pipe = tmp_path / "fifo"
    os.mkfifo(pipe)
    assert TextSource.of(pipe).single == pipe  # a pipe given as the text is one text, read once
    with pytest.raises(CharlmError, match="no such file; give the path of a text file"):
        gather(TextSource.of(tmp_path / "nope.txt"))


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


def test_a_nul_byte_is_binary_in_every_encoding_but_utf16_and_utf32(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"ab\x00cd")
    for encoding in ("utf-8", "latin-1", "cp1252"):
        with pytest.raises(CharlmError, match="looks like a binary file \\(NUL byte at offset 2\\)"):
            read_text(path, encoding)
    utf16 = tmp_path / "u.txt"
    utf16.write_bytes("hello".encode("utf-16"))
    assert read_text(utf16, "utf-16") == "hello"


def test_missing_and_directory(tmp_path):
    with pytest.raises(CharlmError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(CharlmError, match="is a directory"):
        read_text(tmp_path)
