"""A run built top to bottom (charlm/train/setup.py): how it starts, what it reads, what it restores."""

import os
import threading

import pytest
import torch

from charlm.errors import CharlmError
from charlm.train import plan, run, train
from charlm.train.checkpoint import Checkpoint
from tests.data.test_source import tree  # noqa: F401  (a fixture)
from tests.train.test_loop import small_config


def test_a_pipe_trains_like_the_file_it_carries(tmp_path, text_file):
    """`charlm train <(zcat text.gz)`: the text is read once, so a pipe trains exactly as the file."""
    pipe = tmp_path / "fifo"
    os.mkfifo(pipe)

    def write():
        with open(pipe, "w", encoding="utf-8") as out:
            out.write(text_file.read_text(encoding="utf-8"))

    writer = threading.Thread(target=write)
    writer.start()
    config = small_config(**{"train.max_steps": 20})
    train(config, pipe, tmp_path / "piped", progress=False)
    writer.join(timeout=10)
    train(config, text_file, tmp_path / "file", progress=False)
    piped, plain = (Checkpoint.load(tmp_path / name / "last.pt") for name in ("piped", "file"))
    assert piped.text.sha256 == plain.text.sha256
    assert all(torch.equal(piped.weights[k], plain.weights[k]) for k in plain.weights)


def _settings(**more):
    return [("model.size", "fixed"), ("model.hidden_size", 16), ("model.num_layers", 1), ("train.batch_size", 4),
            ("train.seq_len", 16), ("train.threads", 1), ("train.device", "cpu"), ("train.precision", "fp32"),
            ("train.sample_length", 0), *more.items()]


def test_resume_sees_an_added_changed_or_removed_file(tree, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    overrides = [("data.path", str(tree)), *_settings()]
    run(plan(None, [*overrides, ("train.max_steps", 4)], out, progress=False))
    manifest = (out / "files.txt").read_text()
    assert manifest.count(" train ") + manifest.count(" val ") == 6 and "# skipped (binary):" in manifest
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
        with pytest.raises(CharlmError, match="changed since this run started: resume with the original files"):
            run(plan(None, [("train.max_steps", 8)], resume_dir=out, progress=False))


def test_init_from_grows_the_vocabulary_only_when_asked(tmp_path, text_file):
    source = tmp_path / "source"
    run(plan(None, [("data.path", str(text_file)), *_settings(), ("train.max_steps", 3)], source, progress=False))
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text() + " Z#\n")
    with pytest.raises(CharlmError, match="the text has 2 characters that .* never saw: '#', 'Z'; add --extend-vocab"):
        run(plan(None, [("data.path", str(other)), *_settings(), ("train.max_steps", 3)], tmp_path / "a",
                 init_from=source / "last.pt", progress=False))
    run(plan(None, [("data.path", str(other)), *_settings(), ("train.max_steps", 3)], tmp_path / "b",
             init_from=source / "last.pt", extend_vocab=True, progress=False))
    grown = Checkpoint.load(tmp_path / "b" / "last.pt")
    assert grown.vocab.chars[-2:] == ["#", "Z"] and grown.vocab.chars[:-2] == Checkpoint.load(source).vocab.chars
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["anna", "bob", "carl"] * 30))
    with pytest.raises(CharlmError, match="--init-from is not available in lines mode"):
        run(plan(None, [("data.path", str(names)), ("data.mode", "lines"), *_settings()], tmp_path / "c",
                 init_from=source / "last.pt", progress=False))
