import pytest

from charlm.config import (
    Config, build_config, format_duration, parse_duration, parse_scalar, parse_set, validate,
)
from charlm.errors import CharlmError


def test_defaults_validate():
    validate(Config())


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  cell: gru\n  hidden_size: 64\ntrain:\n  lr: 0.01\n  max_time: 90s\n")
    config = build_config(str(path), [("train.lr", 0.005), ("model.num_layers", 3)])
    assert config.model.cell == "gru"
    assert config.model.hidden_size == 64
    assert config.model.num_layers == 3
    assert config.train.lr == 0.005  # flags win over the file
    assert config.train.max_time == 90.0


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("1e-3", 1e-3), ("0.5", 0.5), ("true", True), ("False", False), ("null", None),
    ("lstm", "lstm"), ("[1, 2]", [1, 2]), ("[]", []), ("10m", "10m"),
])
def test_parse_scalar(text, value):
    assert parse_scalar(text) == value


def test_parse_set_and_int_to_float():
    key, value = parse_set("train.lr=1")
    config = build_config(None, [(key, value)])
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400),
                                            ("45", 45), (12, 12), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_format_duration():
    assert format_duration(5400) == "1h30m00s"
    assert format_duration(61) == "1m01s"


@pytest.mark.parametrize("overrides, message", [
    ([("model.hiden_size", 3)], "did you mean 'model.hidden_size'"),
    ([("modle.cell", "gru")], "did you mean 'model'"),
    ([("model.cell", "lstn")], "did you mean 'lstm'"),
    ([("model.hidden_size", "big")], "model.hidden_size must be a int"),
    ([("model.hidden_size", 0)], "model.hidden_size must be >= 1"),
    ([("model.dropout", 1.0)], "model.dropout must be in [0, 1)"),
    ([("data.val_fraction", 0.7)], "data.val_fraction must be in [0, 0.5]"),
    ([("train.batch_size", 0)], "train.batch_size must be >= 1"),
    ([("train.seq_len", 0)], "train.seq_len must be >= 1"),
    ([("train.max_time", "soon")], "not a duration"),
    ([("train.precision", "fp8")], "train.precision"),
    ([("sample.temperature", 0)], "sample.temperature must be > 0"),
    ([("sample.top_p", 1.5)], "sample.top_p must be in (0, 1]"),
    ([("model.tie_weights", True), ("model.embedding_size", 32)], "tie_weights needs"),
    ([("train.lr", True)], "train.lr must be a float"),
    ([("lr", 0.1)], "did you mean 'train.lr'"),
    ([("data.encoding", "klingon")], "unknown encoding"),
])
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(CharlmError) as info:
        build_config(None, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    ("model: [1, 2\n", "malformed YAML at line"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("model:\n  cells: gru\n", "did you mean 'model.cell'"),
    ("optim:\n  lr: 1\n", "unknown config section 'optim'"),
    ("model: 3\n", "must be a mapping"),
    ("!!python/object/apply:os.system ['echo hi']\n", "malformed YAML"),
])
def test_bad_yaml(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(CharlmError) as info:
        build_config(str(path))
    assert message in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(CharlmError, match="not found"):
        build_config(str(tmp_path / "nope.yaml"))


def test_round_trip_through_dict():
    config = build_config(None, [("model.cell", "gru"), ("train.max_time", "2m")])
    again = Config.from_dict(config.to_dict())
    assert again == config
