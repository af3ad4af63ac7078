"""Stream data (charlm/data/stream.py): the contiguous split, the streams a batch is cut from, evaluation
windows, and many files as one stream of documents."""

import numpy as np
import pytest

from charlm.config import DataConfig, build_config
from charlm.data import read_data
from charlm.data.source import TextSource
from charlm.data.stream import StreamBatches, eval_windows, split_tokens
from charlm.data.vocab import DOCUMENT, Vocab
from charlm.errors import CharlmError
from tests.data.test_source import tree  # noqa: F401  (a fixture)


def test_split_matches_nanogpt():
    tokens = np.arange(1_115_394)
    splits = split_tokens(tokens, 0.1, 0.0)
    assert len(splits.train) == 1_003_854 and len(splits.val) == 111_540 and len(splits.test) == 0
    three = split_tokens(np.arange(1000), 0.1, 0.05)
    assert (len(three.train), len(three.val), len(three.test)) == (850, 100, 50)
    assert three.train[-1] + 1 == three.val[0] and three.val[-1] + 1 == three.test[0]


def test_split_on_shared_tinyshakespeare(tinyshakespeare, tmp_path):
    data = read_data(tinyshakespeare, DataConfig(cache_dir=str(tmp_path)))
    assert len(data.vocab) == 65 and (len(data.train), len(data.val)) == (1_003_854, 111_540)


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
        assert batches.starts_fresh(step) == (step == 0)


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
    assert batches.starts_fresh(batches.steps_per_epoch)  # a new epoch: the streams wrapped around


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


def test_many_files_hold_out_whole_files_seeded(tree):  # noqa: F811
    config = DataConfig(val_fraction=0.2, test_fraction=0.15)
    data = read_data(TextSource.of(tree), config)
    counts = data.tokens.counts()
    assert counts["val"]["files"] >= 1 and counts["test"]["files"] >= 1 and counts["train"]["files"] >= 1
    for part in ("train", "val", "test"):
        piece = np.asarray(data.split(part))
        assert piece[0] == data.vocab.document and (piece == data.vocab.document).sum() == counts[part]["files"]
    again = read_data(TextSource.of(tree), config)  # seeded: the same files every time
    assert [e.split for e in again.tokens.entries] == [e.split for e in data.tokens.entries]
    assert "files (" in data.summary() and data.describe()["files"] == counts


def test_auto_split_is_contiguous_for_one_file_and_documents_for_several(tree):  # noqa: F811
    single = read_data(TextSource.of(tree / "a.py"), DataConfig())
    assert single.tokens.single and single.vocab.document is None and "files" not in single.describe()
    many = read_data(TextSource.of(tree), DataConfig())
    assert many.tokens.bounds is not None and many.vocab.document is not None
    contiguous = read_data(TextSource.of(tree), DataConfig(split="contiguous"))
    whole = len(contiguous.tokens.tokens)
    assert contiguous.tokens.bounds is None and len(contiguous.val) == whole - int(whole * 0.9)
    with pytest.raises(CharlmError, match="data.split=documents holds out whole files"):
        read_data(TextSource.of(tree / "a.py"), DataConfig(split="documents"))
    lone = tree / "pkg" / "sub"  # a folder with one usable file: auto cuts it like one file
    one = read_data(TextSource.of(lone), DataConfig())
    assert one.tokens.bounds is None and len(one.tokens.entries) == 1 and len(one.val) > 0
    with pytest.raises(CharlmError, match="has one usable file: data.split=documents"):
        read_data(TextSource.of(lone), DataConfig(split="documents"))


def test_a_model_of_one_text_cannot_read_a_set(tree):  # noqa: F811
    vocab = read_data(TextSource.of(tree / "a.py"), DataConfig()).vocab
    with pytest.raises(CharlmError, match="is several documents, but this model was trained on one text"):
        read_data(TextSource.of(tree), DataConfig(), vocab)


def test_a_sample_starts_where_a_text_of_its_kind_starts():
    from charlm.data.stream import StreamData

    vocab = Vocab(list("\nab"))
    assert StreamData.start_tokens(vocab, "ab") == [1, 2]
    assert StreamData.start_tokens(vocab, "") == [0]  # as if after a newline
    assert StreamData.start_tokens(Vocab(list("ab")), "") == [0]
    assert StreamData.start_tokens(Vocab(["a", DOCUMENT]), "") == [1]  # many files: a new document


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
        charlm.api.Sampler(model.model, Vocab(list("ab")), model.kind).texts(length=5, stop_at_document_end=True)
    held_out = model.own_data("val")  # the run's own splits come back as trained (charlm eval RUN)
    assert held_out[0] == model.vocab.document and model.evaluate_part(held_out)["loss"] < 0.5
    summary = model.checkpoint.summary()
    assert summary["data"]["splits"]["train"]["files"] == 54 and summary["data"]["splits"]["val"]["files"] == 6


def test_paths_and_globs_in_the_config():
    config = build_config(None, [("data.path", ["a", "b/"]), ("data.include", "*.py"), ("data.split", "documents")])
    assert config.data.path == ["a", "b/"] and config.data.include == ["*.py"]
    assert build_config(None, [("data.path", "one.txt")]).data.path == "one.txt"
    with pytest.raises(CharlmError, match="data.split: unknown value 'document'.*did you mean 'documents'"):
        build_config(None, [("data.split", "document")])
    with pytest.raises(CharlmError, match="data.exclude must be a list of strings"):
        build_config(None, [("data.exclude", [["nested"]])])
