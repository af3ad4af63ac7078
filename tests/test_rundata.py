import numpy as np
import pytest

from charlm.config import DataConfig
from charlm.data import StreamBatches, split_tokens
from charlm.errors import CharlmError
from charlm.lines import LineBatches, split_lines
from charlm.rundata import RunData, encode_file

NAMES = ["anna", "bob", "carla", "dave", "eve", "fred", "gina", "hugo", "ines", "jo"] * 12


def test_stream_splits_are_the_contiguous_split_as_views(text_file):
    data = RunData.read(text_file, DataConfig(val_fraction=0.1, test_fraction=0.05))
    expected = split_tokens(data.whole, 0.1, 0.05)
    for name in ("train", "val", "test"):
        assert np.array_equal(data.split(name), getattr(expected, name))
    assert np.shares_memory(data.val, data.whole)  # a view of the memory-mapped cache, not a copy
    assert data.unit == "chars" and data.duplicates == 0 and data.unknown == 0
    assert np.array_equal(data.eval_split(100), data.val[:100]) and len(data.eval_split(None)) == len(data.val)


def test_lines_splits_hold_out_whole_lines_with_the_seeded_shuffle(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES) + "\n")
    config = DataConfig(mode="lines", val_fraction=0.1, test_fraction=0.1, split_seed=3, holdout_cap=5)
    data = RunData.read(path, config)
    expected = split_lines(data.whole, 0.1, 0.1, 3, 5)
    for name in ("train", "val", "test"):
        assert data.split(name).texts(data.vocab) == getattr(expected, name).texts(data.vocab)
    assert len(data.val) == 5 and data.duplicates == 10  # every name appears 12 times: each held-out one is in train
    assert data.unit == "lines" and data.eval_split(2) is data.val  # lines mode evaluates on every val line


def test_training_and_charlm_eval_score_the_same_val_lines(tmp_path):
    """The last evaluation during training and `charlm eval`'s own val split are one and the same."""
    import charlm
    from charlm.config import build_config
    from charlm.logs import read_metrics
    from charlm.train import train

    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES) + "\n")
    config = build_config(None, [("model.size", "fixed"), ("data.mode", "lines"), ("data.holdout_cap", 7), ("data.split_seed", 5),
                                 ("model.hidden_size", 16), ("model.num_layers", 1), ("train.batch_size", 8),
                                 ("train.max_steps", 12), ("train.max_epochs", None), ("train.eval_interval", 12),
                                 ("train.threads", 1), ("train.device", "cpu"), ("train.precision", "fp32")])
    train(config, path, tmp_path / "run", progress=False)
    logged = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "eval"][-1]
    model = charlm.load(tmp_path / "run" / "last.pt")
    report = model.evaluate_tokens(model.own_data("val"))
    assert report["chars"] == logged["val_chars"] and report["loss"] == pytest.approx(logged["val_loss"], rel=1e-6)


def test_each_direction_has_its_batches(text_file, tmp_path):
    data = RunData.read(text_file, DataConfig())
    forward, backward = data.batches(4, 8, 0, "forward"), data.batches(4, 8, 0, "backward")
    assert isinstance(forward, StreamBatches) and np.array_equal(backward.tokens, data.train[::-1])
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES))
    lines = RunData.read(path, DataConfig(mode="lines"))
    batches = lines.batches(4, 8, 0, "backward")
    assert isinstance(batches, LineBatches) and batches.reverse


def test_a_file_read_as_another_model_reads_it(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES))
    vocab = RunData.read(path, DataConfig(mode="lines")).vocab
    other = tmp_path / "other.txt"
    other.write_text("anna\nzoë\n\nbob\n")
    encoded = encode_file(other, "lines", vocab)
    assert encoded.data.texts(vocab) == ["anna", "o", "bob"] and encoded.unknown == 2  # z and ë are not in it
    stream = encode_file(other, "stream", RunData.read(path, DataConfig()).vocab)
    assert stream.unknown == 2 and len(stream.data) == len("anna\nzoë\n\nbob\n") - 2


def test_a_list_read_as_one_stream_is_recognised(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES))
    assert RunData.read(path, DataConfig()).list_hint() == (120, 4)
    assert RunData.read(path, DataConfig(mode="lines")).list_hint() is None
    with pytest.raises(CharlmError, match="too few"):
        RunData.read(path, DataConfig(val_fraction=0.5, test_fraction=0.5, mode="lines")).train
