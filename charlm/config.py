"""The one typed configuration that flows from YAML and the command line into every part.

``resolve`` makes it, once: the dataclass defaults below, then a YAML file (``-c``), then
command-line flags and ``--set section.key=value``, giving the config and the set of keys the
user gave (``model.size: auto`` chooses only the others, and its choice is applied to the result
with ``with_settings``). ``validate`` checks a config; every problem is reported as a
``CharlmError`` with one line that says what is wrong and how to fix it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError

DATA_MODES = ("stream", "lines")
DATA_SPLITS = ("auto", "contiguous", "documents")  # how a text is split...
SPLITS = ("train", "val", "test")  # ...into these
SIZES = ("auto", "fixed")
CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm", "mingru", "minlstm")  # the last two: charlm/model/cells.py
BLOCKS = ("plain", "residual")
DROPOUT_MASKS = ("element", "locked")  # as charlm/model/dropout.py names them
NORMS = ("layer", "rms", "none")
MAX_INPUT_CONV = 4  # model.input_conv: QRNN used 1 and 2
OPTIMIZERS = ("adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "wsd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
NAN_CHECKS = ("auto", "step", "log")
FORGET_BIAS = 0.0  # the one default, for CharRNN too


@dataclass
class DataConfig:
    # A text file, or several paths: files, folders (read recursively) and globs, one document per file.
    path: str | list[str] | None = None
    corpus: str | None = None  # or a named corpus, see `charlm corpus list`
    include: list[str] = field(default_factory=list)  # with folders: only files matching one of these globs
    exclude: list[str] = field(default_factory=list)  # ...and none of these (e.g. "tests/**")
    encoding: str = "utf-8"
    val_fraction: float = 0.1  # share of the text held out for validation...
    test_fraction: float = 0.0  # ...and for testing
    # contiguous: train, then val, then test, cut in the token stream; documents: whole files held out
    # (seeded by split_seed, by share of characters); auto: documents for several files, else contiguous.
    split: str = "auto"
    cache_dir: str | None = None  # token cache; default $XDG_CACHE_HOME/charlm/tokens
    mode: str = "stream"  # stream: one long text | lines: one example per non-empty line (names, titles)
    split_seed: int = 1337  # the seeded shuffle that picks the held-out lines (lines mode) or files (documents)
    holdout_cap: int | None = None  # lines mode: at most this many val (and test) lines, e.g. 1000


@dataclass
class ModelConfig:
    # auto: before training, charlm measures this machine and chooses, for the budget and the text,
    # every key below and in train that the user did not give (charlm/train/auto.py); fixed: the defaults.
    size: str = "auto"
    cell: str = "lstm"  # rnn_tanh | rnn_relu | gru | lstm | mingru | minlstm (gates read only the input)
    hidden_size: int = 256
    embedding_size: int | None = None  # None: same as hidden_size
    num_layers: int = 2
    dropout: float = 0.0  # between layers and before the head
    embedding_dropout: float = 0.0  # on the embedded input characters
    weight_dropout: float = 0.0  # DropConnect on the recurrent (hidden-to-hidden) weights, one mask per batch
    # element: dropout and embedding_dropout draw a new mask at every time step; locked: one mask per
    # sequence, the same at every step (variational dropout, AWD-LSTM's LockedDropout)
    dropout_mask: str = "element"
    tie_weights: bool = False  # share embedding and head weights (needs embedding_size == hidden_size)
    # LSTM and minLSTM: initial forget-gate bias (sum of torch's two bias vectors); 0 trained better than the
    # textbook 1 (configs/sweeps/auto/ts-60s-forget.yaml, docs/auto.md).
    forget_bias: float = FORGET_BIAS
    bidirectional: bool = False  # also train a backward stack that predicts the previous character
    # plain: cells stacked output to input; residual: per layer x + cell(norm(x)), then x + ffn(norm(x))
    block: str = "plain"
    ffn: int = 0  # residual block: feed-forward width as a multiple of hidden_size; 0: none
    norm: str = "layer"  # residual block: layer | rms | none
    # min cells: gates read the last K inputs of their layer, [x_t; x_{t-1}; …] (QRNN's convolution); 1: x_t only
    input_conv: int = 1


@dataclass
class TrainConfig:
    batch_size: int = 32  # parallel contiguous streams
    seq_len: int = 64  # truncated-BPTT window
    optimizer: str = "adamw"  # adamw | sgd | rmsprop
    lr: float = 4e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd momentum
    beta1: float = 0.9  # adamw
    beta2: float = 0.99  # adamw; also rmsprop's smoothing constant alpha
    # constant | cosine | step | wsd (warmup, stable, decay: lr until the last `cooldown` share of the budget,
    # then down to lr * min_lr_ratio; a longer budget given on --resume continues from before the cool-down)
    lr_schedule: str = "cosine"
    cooldown: float = 0.2  # wsd: the share of the budget spent cooling down
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine and wsd end at lr * min_lr_ratio
    lr_decay_every: int = 1000  # step schedule: multiply by lr_decay_rate every this many steps
    lr_decay_rate: float = 0.5
    clip_norm: float = 5.0  # global gradient-norm clipping; 0 turns it off
    clip_value: float = 0.0  # element-wise clipping; 0 turns it off
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | mps (auto: cuda > mps > cpu)
    threads: int = 0  # CPU threads; 0: one per physical core
    max_steps: int | None = None  # budgets: training stops at whichever comes first
    max_epochs: float | None = 10.0  # when neither max_steps nor max_time is given
    max_time: float | None = None  # seconds; YAML and flags accept "90s", "10m", "1h"
    patience: int = 0  # stop after this many evaluations without improvement; 0: off
    eval_interval: int = 250  # steps between evaluations on the val split
    eval_batch_size: int = 32  # streams the val split is cut into
    eval_max_chars: int | None = 2_000_000  # evaluate on the val split's first this many; null: all of it
    ema_decay: float = 0.0  # > 0: evaluate and publish an exponential moving average of the weights (e.g. 0.999)
    # Activation regularisation (AWD-LSTM's AR and TAR): add ar x the mean square of the top layer's output
    # (after dropout) and tar x the mean square of its change from one character to the next; 0: off.
    ar: float = 0.0
    tar: float = 0.0
    log_interval: int = 25  # steps between progress-bar and metrics updates
    log_layer_grads: bool = False  # also log each layer's gradient norm (TensorBoard grad_norm/*) every log_interval
    checkpoint_interval: int = 1000  # steps between writes of last.pt
    max_bad_steps: int = 5  # a NaN/Inf loss or gradient skips its step; this many in a row stop training
    # When the host learns a step was NaN/Inf: "step" reads it every step (a wait for the device: free on
    # a CPU), "log" keeps the verdict on the device and reads it every log_interval (needs adamw on CPU or
    # CUDA); auto: log on CUDA with adamw, else step.
    nan_check: str = "auto"
    sample_length: int = 300  # characters of the text sample logged at each evaluation
    seed: int = 1337


@dataclass
class SampleConfig:
    length: int = 500
    temperature: float = 0.8
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    prime: str = ""  # text to start from; empty: a new document (a model of many files), else as after a newline
    seed: int | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, header: str = "") -> str:
        """The config as a YAML file (``-c`` reads it back), after a ``# header`` comment line."""
        import yaml

        return (f"# {header}\n" if header else "") + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "Config":
        config = cls()
        apply_mapping(config, raw, source)
        return config


# Keys whose values are durations: "90s", "10m", "1h30m" or a number of seconds.
DURATION_KEYS = {"train.max_time"}

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|m|s|ms)?")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in "90s", "10m", "1h", "1h30m" or a plain number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        spec = text.strip().lower().replace(" ", "")
        pos, seconds, parts = 0, 0.0, 0
        while pos < len(spec):
            match = _DURATION_PART.match(spec, pos)
            if not match:
                raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 10m, 1h30m)")
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos, parts = match.end(), parts + 1
        if parts == 0:
            raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 10m, 1h30m)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 10m, 1h30m)")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def section_fields(config: Config) -> dict[str, dict[str, dataclasses.Field]]:
    return {
        section.name: {f.name: f for f in dataclasses.fields(getattr(config, section.name))}
        for section in dataclasses.fields(config)
    }


def all_keys() -> list[str]:
    return [f"{s}.{k}" for s, fields in section_fields(Config()).items() for k in fields]


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the choice closest to ``name``, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_scalar(text: str) -> Any:
    """Parse a --set value: int, float, bool, null, a [list], or else the string itself."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("null", "none", "~"):
        return None
    if stripped.startswith("[") and stripped.endswith("]"):
        inner = stripped[1:-1].strip()
        return [parse_scalar(item) for item in inner.split(",")] if inner else []
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            pass
    return text


TYPE_WORDS = {"int": "a whole number (e.g. 32)", "float": "a number (e.g. 0.003)", "bool": "true or false",
              "str": "a string", "list": "a list of strings (e.g. ['*.py'])"}


def _type_name(hint: Any) -> str:
    if hint == list[str]:
        return TYPE_WORDS["list"]
    names = [a.__name__ for a in typing.get_args(hint) if a is not type(None)] or [hint.__name__]
    return " or ".join(TYPE_WORDS.get(name, name) for name in names)


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` to the field's type, or raise CharlmError naming key, value and type."""
    if key in DURATION_KEYS:
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise CharlmError(f"{key}: {exc}") from None
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise CharlmError(f"{key} cannot be empty: give {_type_name(hint)}")
    wrong = CharlmError(f"{key} must be {_type_name(hint)}, got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if base is int:
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise wrong
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if hint == list[str] or (isinstance(value, list) and list[str] in args):  # globs; one path or several
        base = list[str]
    if base is str:
        if isinstance(value, (list, dict)):
            raise wrong
        return value if isinstance(value, str) else str(value)
    if base == list[str]:
        values = value if isinstance(value, list) else [value]  # one value is a list of one
        if any(isinstance(v, (list, dict)) or v is None for v in values):
            raise wrong
        return [v if isinstance(v, str) else str(v) for v in values]
    raise CharlmError(f"{key}: unsupported type {hint}")  # pragma: no cover - config bug


def _hints(section_obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(section_obj))


def set_key(config: Config, dotted: str, value: Any, source: str = "--set") -> None:
    """Set ``section.key`` to ``value`` (already parsed), checking that the key exists."""
    sections = section_fields(config)
    if "." not in dotted:
        same_name = [k for k in all_keys() if k.split(".", 1)[1] == dotted]
        hint = f" (did you mean '{same_name[0]}'?)" if same_name else did_you_mean(dotted, all_keys())
        raise CharlmError(f"{source}: '{dotted}' is not a config key: use section.key, e.g. train.lr{hint}")
    section, key = dotted.split(".", 1)
    if section not in sections:
        raise CharlmError(
            f"{source}: unknown config section '{section}' (sections: {', '.join(sections)})"
            f"{did_you_mean(section, sections)}"
        )
    if key not in sections[section]:
        raise CharlmError(
            f"{source}: unknown config key '{dotted}'"
            f"{did_you_mean(dotted, all_keys()) or did_you_mean(key, sections[section])}"
        )
    section_obj = getattr(config, section)
    setattr(section_obj, key, coerce(dotted, value, _hints(section_obj)[key]))


def apply_mapping(config: Config, raw: Any, source: str) -> set[str]:
    """Apply a nested mapping ``{section: {key: value}}`` (from YAML or a checkpoint); the keys it set."""
    given: set[str] = set()
    if raw is None:
        return given
    if not isinstance(raw, dict):
        raise CharlmError(f"{source}: expected a mapping of sections (data, model, train, sample)")
    sections = section_fields(config)
    for section, values in raw.items():
        if section not in sections:
            raise CharlmError(
                f"{source}: unknown config section '{section}'"
                f"{did_you_mean(str(section), sections)} (sections: {', '.join(sections)})"
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise CharlmError(f"{source}: section '{section}' must be a mapping of key: value")
        for key, value in values.items():
            set_key(config, f"{section}.{key}", value, source)
            given.add(f"{section}.{key}")
    return given


def parse_set(assignment: str) -> tuple[str, Any]:
    """Split ``section.key=value`` into the key and its parsed value."""
    if "=" not in assignment:
        raise CharlmError(f"--set {assignment!r}: expected section.key=value, e.g. --set train.lr=1e-3")
    key, value = assignment.split("=", 1)
    return key.strip(), parse_scalar(value)


def load_yaml(path: str | Path) -> Any:
    """Load a YAML file safely, with one-line errors for missing or malformed files."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CharlmError(f"config file {path} not found: check the path given to -c/--config") from None
    except IsADirectoryError:
        raise CharlmError(f"config {path} is a directory: give a YAML file") from None
    except UnicodeDecodeError:
        raise CharlmError(f"config {path} is not UTF-8 text: give a YAML file") from None
    except OSError as exc:
        raise CharlmError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise CharlmError(f"config {path}: malformed YAML{where}: {problem}") from None


def resolve(config_file: str | None = None, overrides: typing.Sequence[tuple[str, Any]] = ()
            ) -> tuple[Config, frozenset[str]]:
    """The defaults, then the YAML file, then ``(key, value)`` overrides, validated; and the keys
    the file and the overrides gave."""
    config, given = Config(), set()
    if config_file:
        given |= apply_mapping(config, load_yaml(config_file), f"config {config_file}")
    for key, value in overrides:
        set_key(config, key, value)
        given.add(key)
    with_budget_defaults(config, given)
    validate(config)
    return config, frozenset(given)


def with_budget_defaults(config: Config, given: typing.Collection[str]) -> None:
    """The default 10 epochs is for a run given no budget: ``--max-time 10m`` alone means 10 minutes."""
    if "train.max_epochs" not in given and {"train.max_time", "train.max_steps"} & set(given):
        config.train.max_epochs = None


def build_config(config_file: str | None = None, overrides: typing.Sequence[tuple[str, Any]] = (),
                 base: Config | None = None) -> Config:
    """``resolve``'s config; or, from ``base`` (a run's own config, which stands as it was resolved),
    a copy with the YAML file and the overrides applied, validated."""
    if base is None:
        return resolve(config_file, overrides)[0]
    config = copy.deepcopy(base)
    if config_file:
        apply_mapping(config, load_yaml(config_file), f"config {config_file}")
    for key, value in overrides:
        set_key(config, key, value)
    validate(config)
    return config


def with_settings(config: Config, settings: dict[str, Any], source: str) -> Config:
    """A copy of ``config`` with ``settings`` ({section.key: value}) applied, validated."""
    chosen = copy.deepcopy(config)
    for key, value in settings.items():
        set_key(chosen, key, value, source)
    validate(chosen)
    return chosen


def changed_keys(config: Config) -> frozenset[str]:
    """The keys whose values differ from the defaults: what a config built in Python gave."""
    default = Config().to_dict()
    return frozenset(f"{section}.{key}" for section, values in config.to_dict().items()
                     for key, value in values.items() if value != default[section][key])


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise CharlmError(message)


def _choice(key: str, value: str, choices: typing.Sequence[str]) -> None:
    if value not in choices:
        raise CharlmError(
            f"{key}: unknown value '{value}'{did_you_mean(value, choices)}; choose one of {', '.join(choices)}"
        )


def validate(config: Config) -> None:
    """Check choices and ranges; raise CharlmError on the first problem."""
    _validate_data(config.data)
    _validate_model(config.model)
    _validate_train(config.train)
    _validate_sample(config.sample)


def _validate_data(data: DataConfig) -> None:
    for key, value in (("data.val_fraction", data.val_fraction), ("data.test_fraction", data.test_fraction)):
        _check(0.0 <= value <= 0.5, f"{key} must be in [0, 0.5], got {value}")
    _check(
        data.val_fraction + data.test_fraction < 1.0,
        "data.val_fraction + data.test_fraction must leave text to train on",
    )
    try:
        "".encode(data.encoding)
    except LookupError:
        raise CharlmError(f"data.encoding: unknown encoding '{data.encoding}' (e.g. utf-8, latin-1, cp1252)") from None

    _choice("data.mode", data.mode, DATA_MODES)
    _choice("data.split", data.split, DATA_SPLITS)
    if data.holdout_cap is not None:
        _check(data.holdout_cap >= 1, f"data.holdout_cap must be >= 1 (or null for no cap), got {data.holdout_cap}")


def _validate_model(model: ModelConfig) -> None:
    _choice("model.size", model.size, SIZES)
    _choice("model.cell", model.cell, CELLS)
    _choice("model.block", model.block, BLOCKS)
    _choice("model.norm", model.norm, NORMS)
    _choice("model.dropout_mask", model.dropout_mask, DROPOUT_MASKS)
    _check(model.ffn >= 0, f"model.ffn must be >= 0 (a multiple of hidden_size; 0: none), got {model.ffn}")
    _check(model.ffn == 0 or model.block == "residual",
           f"model.ffn {model.ffn} needs model.block residual (a plain stack has no feed-forward part)")
    _check(model.weight_dropout == 0 or not model.cell.startswith("min"),
           f"model.weight_dropout drops hidden-to-hidden weights, and a {model.cell} has none:"
           " set it to 0 (model.dropout regularises these cells)")
    _check(1 <= model.input_conv <= MAX_INPUT_CONV,
           f"model.input_conv must be 1 to {MAX_INPUT_CONV} (how many inputs the gates read), got {model.input_conv}")
    _check(model.input_conv == 1 or model.cell.startswith("min"),
           f"model.input_conv {model.input_conv} is for the min cells (mingru, minlstm), whose gates read only"
           f" their input; a {model.cell} reads its past through its hidden state: set it to 1")
    if model.block == "residual" or model.input_conv > 1:
        why = ("model.block residual adds each layer's output to its input" if model.block == "residual" else
               f"model.input_conv {model.input_conv} carries each layer's last inputs in the state")
        _check((model.embedding_size or model.hidden_size) == model.hidden_size,
               f"{why}, so embedding_size must equal hidden_size (got {model.embedding_size} and"
               f" {model.hidden_size}): unset embedding_size")
    for key in ("hidden_size", "num_layers"):
        _check(getattr(model, key) >= 1, f"model.{key} must be >= 1, got {getattr(model, key)}")
    if model.embedding_size is not None:
        _check(model.embedding_size >= 1, f"model.embedding_size must be >= 1, got {model.embedding_size}")
    _check(0.0 <= model.dropout < 1.0, f"model.dropout must be in [0, 1), got {model.dropout}")
    _check(0.0 <= model.weight_dropout < 1.0, f"model.weight_dropout must be in [0, 1), got {model.weight_dropout}")
    _check(0.0 <= model.embedding_dropout < 1.0,
           f"model.embedding_dropout must be in [0, 1), got {model.embedding_dropout}")
    if model.tie_weights:
        embedding = model.embedding_size or model.hidden_size
        _check(
            embedding == model.hidden_size,
            f"model.tie_weights needs embedding_size == hidden_size (got {embedding} and {model.hidden_size}):"
            " unset embedding_size or turn tie_weights off",
        )
    _check(math.isfinite(model.forget_bias), "model.forget_bias must be a finite number")


def _validate_train(train: TrainConfig) -> None:
    _choice("train.optimizer", train.optimizer, OPTIMIZERS)
    _check(0.0 <= train.ema_decay < 1.0, f"train.ema_decay must be in [0, 1) (0: off), got {train.ema_decay}")
    _choice("train.lr_schedule", train.lr_schedule, SCHEDULES)
    _choice("train.precision", train.precision, PRECISIONS)
    _choice("train.device", train.device.split(":")[0], DEVICES)
    _choice("train.nan_check", train.nan_check, NAN_CHECKS)
    _check(train.nan_check != "log" or train.optimizer == "adamw",
           f"train.nan_check log needs train.optimizer adamw (its fused update skips itself on the device);"
           f" with {train.optimizer} use nan_check step or auto")
    for key in ("batch_size", "seq_len", "eval_interval", "eval_batch_size", "log_interval",
                "checkpoint_interval", "lr_decay_every", "max_bad_steps"):
        _check(getattr(train, key) >= 1, f"train.{key} must be >= 1, got {getattr(train, key)}")
    for key in ("warmup_steps", "patience", "threads", "sample_length"):
        _check(getattr(train, key) >= 0, f"train.{key} must be >= 0, got {getattr(train, key)}")
    _check(math.isfinite(train.lr) and train.lr > 0, f"train.lr must be > 0, got {train.lr}")
    for key in ("weight_decay", "clip_norm", "clip_value", "ar", "tar"):
        value = getattr(train, key)
        _check(math.isfinite(value) and value >= 0, f"train.{key} must be >= 0 (0 turns it off), got {value}")
    for key in ("momentum", "beta1", "beta2"):
        _check(0.0 <= getattr(train, key) < 1.0, f"train.{key} must be in [0, 1), got {getattr(train, key)}")
    _check(0.0 <= train.min_lr_ratio <= 1.0, f"train.min_lr_ratio must be in [0, 1], got {train.min_lr_ratio}")
    _check(0.0 < train.cooldown <= 1.0, f"train.cooldown must be in (0, 1] (a share of the budget), got {train.cooldown}")
    _check(0.0 < train.lr_decay_rate <= 1.0, f"train.lr_decay_rate must be in (0, 1], got {train.lr_decay_rate}")
    if train.eval_max_chars is not None:
        _check(train.eval_max_chars >= 2, f"train.eval_max_chars must be >= 2 (or null for all), got {train.eval_max_chars}")
    if train.max_steps is not None:
        _check(train.max_steps >= 1, f"train.max_steps must be >= 1, got {train.max_steps}")
    if train.max_epochs is not None:
        _check(train.max_epochs > 0, f"train.max_epochs must be > 0, got {train.max_epochs}")
    if train.max_time is not None:
        _check(train.max_time > 0, f"train.max_time must be > 0, got {train.max_time}")


def _validate_sample(sample: SampleConfig) -> None:
    _check(sample.length >= 0, f"sample.length must be >= 0, got {sample.length}")
    _check(
        math.isfinite(sample.temperature) and sample.temperature > 0,
        f"sample.temperature must be > 0 (use --greedy for the most likely character), got {sample.temperature}",
    )
    _check(sample.top_k >= 0, f"sample.top_k must be >= 1, or 0 for off; got {sample.top_k}")
    _check(0.0 < sample.top_p <= 1.0, f"sample.top_p must be in (0, 1], got {sample.top_p}")
