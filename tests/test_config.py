import pytest

from charlm.config import Config, build_config, format_duration, parse_duration, parse_scalar, parse_set, validate
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
    ([("model.hidden_size", "big")], "model.hidden_size must be a whole number"),
    ([("model.hidden_size", 0)], "model.hidden_size must be >= 1"),
    ([("model.dropout", 1.0)], "model.dropout must be in [0, 1)"),
    ([("model.dropout_mask", "lockd")], "did you mean 'locked'"),
    ([("train.ar", -1.0)], "train.ar must be >= 0"),
    ([("train.cooldown", 0)], "train.cooldown must be in (0, 1]"),
    ([("train.lr_schedule", "wds")], "did you mean 'wsd'"),
    ([("train.tar", float("nan"))], "train.tar must be >= 0"),
    ([("data.val_fraction", 0.7)], "data.val_fraction must be in [0, 0.5]"),
    ([("train.batch_size", 0)], "train.batch_size must be >= 1"),
    ([("train.seq_len", 0)], "train.seq_len must be >= 1"),
    ([("train.max_time", "soon")], "not a duration"),
    ([("train.precision", "fp8")], "train.precision"),
    ([("sample.temperature", 0)], "sample.temperature must be > 0"),
    ([("sample.top_p", 1.5)], "sample.top_p must be in (0, 1]"),
    ([("model.tie_weights", True), ("model.embedding_size", 32)], "tie_weights needs"),
    ([("train.lr", True)], "train.lr must be a number"),
    ([("lr", 0.1)], "did you mean 'train.lr'"),
    ([("data.encoding", "klingon")], "unknown encoding"),
    ([("train.nan_check", "often")], "train.nan_check: unknown value 'often'"),
    ([("train.nan_check", "log"), ("train.optimizer", "sgd")], "train.nan_check log needs train.optimizer adamw"),
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


def test_yaml_with_a_python_object_tag_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CharlmError, match="malformed YAML"):
        build_config(str(evil))
    assert not marker.exists()


# ---- fuzzing: whatever comes in, the result is a config or one clean CharlmError line ----------

import dataclasses  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REAL_KEYS = [f"{section.name}.{field.name}" for section in dataclasses.fields(Config)
             for field in dataclasses.fields(section.type if isinstance(section.type, type) else
                                             getattr(Config(), section.name))]
SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=6)
KEYS = st.sampled_from(REAL_KEYS) | st.text(max_size=20)


def _clean_or_config(build):
    try:
        return build()
    except CharlmError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return None


def _build_from_yaml_text(text: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        return _clean_or_config(lambda: build_config(str(path)))


@settings(deadline=None)
@given(st.text(max_size=300))
def test_fuzz_any_yaml_text(text):
    _build_from_yaml_text(text)


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(["data", "model", "train", "sample"]) | st.text(max_size=8),
                       st.dictionaries(st.sampled_from([k.split(".")[1] for k in REAL_KEYS]) | st.text(max_size=8),
                                       VALUES, max_size=4) | VALUES, max_size=4))
def test_fuzz_structured_yaml(mapping):
    config = _build_from_yaml_text(yaml.safe_dump(mapping, allow_unicode=True))
    if config is not None:  # what was accepted is a valid config that survives a round trip
        validate(config)
        assert Config.from_dict(config.to_dict()).to_dict() == config.to_dict()


@settings(deadline=None)
@given(st.text(max_size=60) | st.builds(lambda key, value: f"{key}={value}", KEYS, st.text(max_size=20)))
def test_fuzz_set_assignments(assignment):
    _clean_or_config(lambda: build_config(None, [parse_set(assignment)]))


def test_resolving_gives_the_keys_the_user_gave(tmp_path):
    from charlm.config import resolve

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  cell: gru\ntrain:\n  lr: 0.004\n")
    config, given = resolve(str(path), [("model.hidden_size", 64)])
    assert given == {"model.cell", "train.lr", "model.hidden_size"} and config.model.cell == "gru"


def test_ten_epochs_is_the_budget_only_when_no_other_is_given():
    from charlm.config import resolve

    def epochs(*overrides):
        return resolve(None, list(overrides))[0].train.max_epochs

    assert epochs() == 10.0
    assert epochs(("train.max_time", "10m")) is None  # --max-time 10m means ten minutes
    assert epochs(("train.max_steps", 500)) is None
    assert epochs(("train.max_time", "10m"), ("train.max_epochs", 3)) == 3.0  # given, it counts too
    base = resolve(None, [("train.max_steps", 5)])[0]
    assert build_config(None, [("train.max_epochs", 2.0)], base=base).train.max_epochs == 2.0  # a run's own stands
    assert base.train.max_epochs is None  # building from a base copies it


def test_settings_make_a_new_config_and_changed_keys_are_what_differs():
    from charlm.config import Config, changed_keys, with_settings

    config = Config()
    chosen = with_settings(config, {"model.hidden_size": 512}, "auto")
    assert chosen.model.hidden_size == 512 and config.model.hidden_size == 256
    assert changed_keys(chosen) == {"model.hidden_size"}
    with pytest.raises(CharlmError, match="model.hidden_size must be >= 1"):
        with_settings(config, {"model.hidden_size": 0}, "auto")
