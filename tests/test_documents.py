"""Many files as one text (charlm/documents.py): listing, skipping, splitting by file, the cache,
the document marker, resume checks, and training on a tree end to end."""

import os
import subprocess
import sys

import numpy as np
import pytest

from charlm.config import DataConfig, build_config
from charlm.data import DOCUMENT, Vocab
from charlm.documents import Skipped, TextSource, gather, load_documents, matches
from charlm.errors import CharlmError
from charlm.rundata import RunData
from conftest import make_text


@pytest.fixture
def tree(tmp_path):
    """Text in nested folders, and everything that is not: a binary, a Latin-1 file, hidden files
    and folders, an empty file, and a link loop."""
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
    os.symlink("..", root / "pkg" / "loop")  # a folder link back up: never followed
    return root


def _names(documents):
    return [d.inner for d in documents]


def test_a_tree_lists_its_text_files_sorted_and_says_what_it_skipped(tree):
    skipped = Skipped()
    documents = gather(TextSource.of(tree), skipped)
    assert _names(documents) == ["a.py", "b.py", "empty.txt", "image.png", "latin.txt", "notes.txt", "pkg/c.py",
                                 "pkg/sub/d.py", "tests/test_e.py"]  # content is judged when read
    assert sorted(skipped.files["hidden"]) == [f"{tree}/.env", f"{tree}/.git/"]
    loaded = load_documents(TextSource.of(tree), "stream", "documents", 0.2, 0.0, seed=1, cache_dir=tree.parent / "c")
    assert [e.document.inner for e in sorted(loaded.entries, key=lambda e: e.document.name)] == [
        "a.py", "b.py", "notes.txt", "pkg/c.py", "pkg/sub/d.py", "tests/test_e.py"]
    assert loaded.skipped.summary() == "skipped 1 binary, 1 empty, 2 hidden, 1 not utf-8"
    assert f"# skipped (not utf-8): {tree}/latin.txt" in loaded.manifest()


def test_globs_include_and_exclude(tree):
    only_py = gather(TextSource.of(tree, include=["*.py"], exclude=["tests/**"]))
    assert _names(only_py) == ["a.py", "b.py", "pkg/c.py", "pkg/sub/d.py"]
    globbed = gather(TextSource.of(str(tree / "pkg" / "**" / "*.py")))
    assert [d.path.name for d in globbed] == ["c.py", "d.py"]
    several = gather(TextSource.of([tree / "notes.txt", tree / "pkg", tree / "notes.txt"]))
    assert [d.path.name for d in several] == ["notes.txt", "c.py", "d.py"]  # named twice: read once
    assert matches("pkg/sub/d.py", ["pkg/**"]) and matches("pkg/sub/d.py", ["*.py"]) and not matches("a.py", ["pkg/*"])
    with pytest.raises(CharlmError, match="matches no file"):
        gather(TextSource.of(str(tree / "*.rs")))
    with pytest.raises(CharlmError, match="no such file or folder"):
        gather(TextSource.of(tree / "nothing"))


def test_a_folder_without_text_is_one_clear_error(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.dat").write_bytes(b"\x00\x01" * 100)
    with pytest.raises(CharlmError, match="holds no usable text \\(skipped 1 binary file\\)"):
        load_documents(TextSource.of(tmp_path / "bin"), "stream", "documents", 0.1, 0.0, 1, cache_dir=tmp_path / "c")


def test_the_split_holds_out_whole_files_and_never_cuts_one(tree, tmp_path):
    config = DataConfig(val_fraction=0.2, test_fraction=0.15)
    data = RunData.read(TextSource.of(tree), config)
    entries, tokens = data.documents.entries, np.asarray(data.whole)
    assert [e.split for e in entries] == sorted((e.split for e in entries), key=("train", "val", "test").index)
    counts = data.split_counts()
    assert counts["val"]["files"] >= 1 and counts["test"]["files"] >= 1 and counts["train"]["files"] >= 1
    marker = data.vocab.document
    for part in ("train", "val", "test"):
        piece = np.asarray(data.split(part))
        assert piece[0] == marker  # every split starts at a document's start...
        assert (piece == marker).sum() == counts[part]["files"]  # ...and holds whole documents only
    assert len(tokens) == sum(len(data.split(p)) for p in ("train", "val", "test"))
    decoded = [data.vocab.decode(np.asarray(data.split(p))) for p in ("train", "val", "test")]
    for part, name in zip(decoded, ("train", "val", "test")):
        assert part == "".join(e.document.path.read_text() for e in entries if e.split == name)
    again = RunData.read(TextSource.of(tree), config)  # seeded: the same files every time
    assert [e.split for e in again.documents.entries] == [e.split for e in entries]


def test_auto_split_is_contiguous_for_one_file_and_documents_for_several(tree):
    single = RunData.read(TextSource.of(tree / "a.py"), DataConfig())
    assert single.documents is None and single.vocab.document is None
    many = RunData.read(TextSource.of(tree), DataConfig())
    assert many.documents.bounds is not None and many.vocab.document is not None
    contiguous = RunData.read(TextSource.of(tree), DataConfig(split="contiguous"))
    whole = len(contiguous.whole)
    assert contiguous.documents.bounds is None and len(contiguous.val) == whole - int(whole * 0.9)
    with pytest.raises(CharlmError, match="data.split=documents holds out whole files"):
        RunData.read(TextSource.of(tree / "a.py"), DataConfig(split="documents"))
    lone = tree / "pkg" / "sub"  # a folder with one usable file: auto cuts it like one file
    one = RunData.read(TextSource.of(lone), DataConfig())
    assert one.documents.bounds is None and len(one.documents.entries) == 1 and len(one.val) > 0
    with pytest.raises(CharlmError, match="has one usable file: data.split=documents"):
        RunData.read(TextSource.of(lone), DataConfig(split="documents"))


def test_the_marker_is_in_the_vocabulary_and_never_printed(tree):
    data = RunData.read(TextSource.of(tree), DataConfig())
    assert data.vocab.chars[-1] == DOCUMENT and DOCUMENT not in data.vocab.decode(np.asarray(data.whole))
    vocab = Vocab(["a", "b", DOCUMENT])
    assert vocab.decode([2, 0, 2, 1]) == "ab" and vocab.render([2, 0, 1]) == "ab"
    assert vocab.encode("ab").tolist() == [0, 1]  # no character encodes to it, not even the string "<doc>"
    assert set(vocab.missing("<doc>")) == set("<doc>")


def test_the_cache_is_reused_when_nothing_changed_and_rebuilt_when_a_file_did(tree, tmp_path, monkeypatch):
    import charlm.documents as documents

    writes = []
    write = documents._write_tokens
    monkeypatch.setattr(documents, "_write_tokens", lambda *a, **k: writes.append(1) or write(*a, **k))
    cache = tmp_path / "cache"
    first = load_documents(TextSource.of(tree), "stream", "documents", 0.2, 0, 1, cache_dir=cache)
    second = load_documents(TextSource.of(tree), "stream", "documents", 0.2, 0, 1, cache_dir=cache)
    assert len(writes) == 1 and first.sha256 == second.sha256
    (tree / "b.py").write_text("changed\n")
    third = load_documents(TextSource.of(tree), "stream", "documents", 0.2, 0, 1, cache_dir=cache)
    assert len(writes) == 2 and third.sha256 != first.sha256


def test_memory_stays_bounded_on_many_small_files(tmp_path, monkeypatch):
    """Files are read and encoded in chunks (capped here at 256 bytes), never a whole file or the
    whole tree at once; the tokens go straight to the memory-mapped cache."""
    from charlm.data import Vocab as V

    root = tmp_path / "many"
    root.mkdir()
    for i in range(300):
        (root / f"f{i:03d}.txt").write_text(make_text(1500, seed=i))
    seen = []
    encode = V.encode
    monkeypatch.setattr(V, "encode", lambda self, text, skip_unknown=False: seen.append(len(text)) or encode(self, text, skip_unknown))
    loaded = load_documents(TextSource.of(root), "stream", "documents", 0.1, 0, 1, cache_dir=tmp_path / "c",
                            chunk_bytes=256)
    assert isinstance(loaded.tokens, np.memmap) and len(loaded.entries) == 300
    assert max(seen) <= 256 and len(seen) > 300 * 5


def test_lines_mode_reads_every_line_of_every_file(tmp_path):
    root = tmp_path / "lists"
    root.mkdir()
    (root / "a.txt").write_text("anna\nbob\n")
    (root / "b.txt").write_text("carl\ndora")  # no final line break: the next file still starts a line
    (root / "c.txt").write_text("emil\n\nfrida\n")
    data = RunData.read(TextSource.of(root), DataConfig(mode="lines", val_fraction=0.0))
    assert sorted(data.whole.texts(data.vocab)) == ["anna", "bob", "carl", "dora", "emil", "frida"]


def _train(*args, cwd):
    command = [sys.executable, "-m", "charlm", "train", *map(str, args), "--no-progress", "--no-sample",
               "--set", "model.size=fixed", "--hidden-size", "32", "--precision", "fp32", "--device", "cpu",
               "--threads", "1", "--batch-size", "8", "--seq-len", "32"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_resume_sees_an_added_changed_or_removed_file(tree, tmp_path):
    run = tmp_path / "run"
    first = _train(tree, "-o", run, "--max-steps", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "skipped 1 binary, 1 empty, 2 hidden, 1 not utf-8" in first.stderr
    assert (run / "files.txt").read_text().count(" train ") + (run / "files.txt").read_text().count(" val ") == 6
    kept = (tree / "pkg" / "c.py").read_text()

    def add():
        (tree / "new.txt").write_text("more text\n")

    def remove():
        (tree / "new.txt").unlink()
        (tree / "pkg" / "c.py").unlink()

    def change():
        (tree / "pkg" / "c.py").write_text(kept)
        (tree / "a.py").write_text("other\n")

    for edit in (add, remove, change):
        edit()
        resumed = _train("--resume", run, "--max-steps", "8", cwd=tmp_path)
        assert resumed.returncode == 2, edit.__name__
        assert "changed since this run started: resume with the original files" in resumed.stderr
        assert "Traceback" not in resumed.stderr


def test_a_model_of_tiny_files_learns_their_document_structure(tmp_path):
    """Each file is a short fixed-form record; after training, a sample from a document start is one
    whole record and stops where the model ends its document."""
    import charlm
    from charlm.train import train

    root = tmp_path / "records"
    root.mkdir()
    for i in range(60):
        (root / f"r{i:02d}.txt").write_text(f"BEGIN\nitem {'abcdef'[i % 6]}\nEND\n")
    config = build_config(None, [("model.size", "fixed"), ("model.hidden_size", 48), ("model.num_layers", 1),
                                 ("train.batch_size", 8), ("train.seq_len", 32), ("train.max_steps", 400),
                                 ("train.max_epochs", None), ("train.lr", 1e-2), ("train.precision", "fp32"),
                                 ("train.device", "cpu"), ("train.threads", 1), ("train.sample_length", 0),
                                 ("data.val_fraction", 0.1)])
    train(config, root, tmp_path / "run", progress=False)
    model = charlm.load(tmp_path / "run")
    texts = model.texts(length=200, num_samples=8, stop_at_document_end=True, temperature=0.5, seed=0)
    assert sum(t.startswith("BEGIN\nitem ") and t.endswith("END\n") and len(t) < 40 for t in texts) >= 6, texts
    assert all(DOCUMENT not in t for t in model.texts(length=300, num_samples=2, seed=1))
    with pytest.raises(CharlmError, match="needs a model trained on several files"):
        charlm.api.Sampler(model.model, Vocab(list("ab"))).texts(length=5, stop_at_document_end=True)

    # The run's own splits come back as trained (charlm eval RUN, charlm info RUN).
    held_out = model.own_data("val")
    assert held_out[0] == model.vocab.document and model.evaluate_tokens(held_out)["loss"] < 0.5
    info = subprocess.run([sys.executable, "-m", "charlm", "info", str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=120)
    assert "train      54 files" in info.stdout and "val        6 files" in info.stdout, info.stdout


def test_paths_and_globs_in_the_config():
    config = build_config(None, [("data.path", ["a", "b/"]), ("data.include", "*.py"), ("data.split", "documents")])
    assert config.data.path == ["a", "b/"] and config.data.include == ["*.py"]
    assert build_config(None, [("data.path", "one.txt")]).data.path == "one.txt"
    with pytest.raises(CharlmError, match="data.split: unknown value 'document'.*did you mean 'documents'"):
        build_config(None, [("data.split", "document")])
    with pytest.raises(CharlmError, match="data.exclude must be a list of strings"):
        build_config(None, [("data.exclude", [["nested"]])])
