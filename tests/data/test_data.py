"""The one interface to a run's text (charlm/data/base.py), for both kinds: what training, charlm eval,
the API and charlm inspect ask of it."""

import numpy as np
import pytest

from charlm.config import DataConfig
from charlm.data import kind, read_data
from charlm.data.lines import LineBatches, LineData, split_lines
from charlm.data.stream import StreamBatches, StreamData, split_tokens
from charlm.errors import CharlmError

NAMES = ["anna", "bob", "carla", "dave", "eve", "fred", "gina", "hugo", "ines", "jo"] * 12


@pytest.fixture
def names(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES) + "\n")
    return path


def test_the_mode_names_the_kind():
    assert kind("stream") is StreamData and kind("lines") is LineData


def test_stream_splits_are_the_contiguous_split_as_views(text_file):
    data = read_data(text_file, DataConfig(val_fraction=0.1, test_fraction=0.05))
    whole = data.tokens.tokens
    expected = split_tokens(whole, 0.1, 0.05)
    for name in ("train", "val", "test"):
        assert np.array_equal(data.split(name), getattr(expected, name))
    assert np.shares_memory(data.val.tokens, whole)  # a view of the memory-mapped cache, not a copy
    assert data.unit == "chars" and data.unknown == 0 and data.window_length is None
    assert np.array_equal(data.eval_part(100), np.asarray(data.val)[:100]) and len(data.eval_part(None)) == len(data.val)
    assert data.val.predicted == len(data.val) - 1 and data.val.describe() == {}


def test_lines_splits_hold_out_whole_lines_with_the_seeded_shuffle(names):
    config = DataConfig(mode="lines", val_fraction=0.1, test_fraction=0.1, split_seed=3, holdout_cap=5)
    data = read_data(names, config)
    expected = split_lines(data.lines, 0.1, 0.1, 3, 5)
    for name in ("train", "val", "test"):
        assert data.split(name).texts(data.vocab) == getattr(expected, name).texts(data.vocab)
    assert len(data.val) == 5 and data.duplicates == 10  # every name appears 12 times: each held-out one is in train
    assert data.unit == "lines" and data.eval_part(2) is data.val  # lines mode evaluates on every val line
    assert data.val.predicted == sum(len(t) + 1 for t in data.val.texts(data.vocab))
    assert data.describe()["held_out_duplicates"] == 10 and data.val.describe() == {"lines": 5}


def test_training_and_charlm_eval_score_the_same_val_lines(names, tmp_path):
    """The last evaluation during training and `charlm eval`'s own val split are one and the same."""
    import charlm
    from charlm.config import build_config
    from charlm.train import train
    from charlm.train.logs import read_metrics

    config = build_config(None, [("model.size", "fixed"), ("data.mode", "lines"), ("data.holdout_cap", 7),
                                 ("data.split_seed", 5), ("model.hidden_size", 16), ("model.num_layers", 1),
                                 ("train.batch_size", 8), ("train.max_steps", 12), ("train.max_epochs", None),
                                 ("train.eval_interval", 12), ("train.threads", 1), ("train.device", "cpu"),
                                 ("train.precision", "fp32")])
    train(config, names, tmp_path / "run", progress=False)
    logged = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "eval"][-1]
    model = charlm.load(tmp_path / "run" / "last.pt")
    report = model.evaluate_part(model.own_data("val"))
    assert report["chars"] == logged["val_chars"] and report["loss"] == pytest.approx(logged["val_loss"], rel=1e-6)


def test_each_direction_has_its_batches(text_file, names):
    data = read_data(text_file, DataConfig())
    forward, backward = data.batches(4, 8, 0, "forward"), data.batches(4, 8, 0, "backward")
    assert isinstance(forward, StreamBatches) and np.array_equal(backward.tokens, np.asarray(data.train)[::-1])
    lines = read_data(names, DataConfig(mode="lines"))
    batches = lines.batches(4, 8, 0, "backward")
    assert isinstance(batches, LineBatches) and batches.reverse and batches.starts_fresh(3)


def test_a_file_read_as_another_model_reads_it(names, tmp_path):
    vocab = read_data(names, DataConfig(mode="lines")).vocab
    other = tmp_path / "other.txt"
    other.write_text("anna\nzoë\n\nbob\n")
    part, unknown = LineData.encode_file(other, vocab)
    assert part.texts(vocab) == ["anna", "o", "bob"] and unknown == 2  # z and ë are not in it
    assert LineData.encode_text("anna\nzoë\n\nbob\n", vocab)[0].texts(vocab) == ["anna", "o", "bob"]
    stream, unknown = StreamData.encode_file(other, read_data(names, DataConfig()).vocab)
    assert unknown == 2 and len(stream) == len("anna\nzoë\n\nbob\n") - 2


def test_a_list_read_as_one_stream_gets_a_hint(names):
    assert read_data(names, DataConfig()).hints() == [
        "names.txt looks like a list (120 lines, median 4 characters): --set data.mode=lines trains on whole lines"]
    assert read_data(names, DataConfig(mode="lines")).hints() == []
    with pytest.raises(CharlmError, match="too few"):
        read_data(names, DataConfig(val_fraction=0.5, test_fraction=0.5, mode="lines")).train
