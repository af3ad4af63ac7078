"""Sweep files: reading one, checking every key and both ends of every range before any trial runs.

A sweep file names a base config, what stays fixed (``set``) and what is searched
(``parameters``); every problem is one CharlmError line that names the key, with did-you-mean.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlm.config import Config, apply_mapping, did_you_mean, load_yaml, section_fields, set_key, validate
from charlm.errors import CharlmError

if TYPE_CHECKING:
    from charlm.data.source import TextSource

SWEEP_KEYS = ("name", "base", "config", "data", "method", "trials", "workers", "metric", "pruner", "set", "parameters",
              "seed", "heartbeat")
# Seconds between a trial's heartbeats; a trial silent for three is taken up by another scheduler.
HEARTBEAT = 20
METHODS = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")
DISTRIBUTIONS = ("uniform", "log_uniform", "int")
METRICS = ("val_loss",)


@dataclass
class Parameter:
    """One searched config key: a list of values, or a distribution between ``low`` and ``high``."""

    key: str
    values: list[Any] | None = None
    distribution: str | None = None
    low: float | None = None
    high: float | None = None
    step: int = 1

    def grid_values(self) -> list[Any]:
        if self.values is not None:
            return self.values
        return list(range(int(self.low), int(self.high) + 1, self.step))  # only int reaches here

    def describe(self) -> str:
        if self.values is not None:
            return f"one of {', '.join(map(str, self.values))}"
        kind = {"uniform": "uniform", "log_uniform": "log-uniform", "int": "integer"}[self.distribution]
        return f"{kind} in [{self.low:g}, {self.high:g}]" + (f" step {self.step}" if self.step != 1 else "")


@dataclass
class SweepSpec:
    name: str
    base: Config  # defaults <- base file <- inline config <- data <- set
    given: frozenset[str]  # the keys those set: model.size auto leaves them (and the parameters) alone
    method: str
    trials: int  # the grid's size for grid sweeps
    metric: str
    pruner: dict[str, Any]
    parameters: list[Parameter]
    seed: int
    workers: int = 1  # trials at once, unless --workers says otherwise
    heartbeat: int = HEARTBEAT  # seconds between a trial's heartbeats in the study
    raw: dict[str, Any] = field(default_factory=dict)  # as written, to recognise the same sweep on resume

    def grid(self) -> list[dict[str, Any]]:
        keys = [p.key for p in self.parameters]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(p.grid_values() for p in self.parameters))]

    def to_yaml(self) -> str:
        """The sweep file as written (kept in the sweep directory)."""
        import yaml

        return "# the sweep file this directory was made from\n" + yaml.safe_dump(self.raw, sort_keys=False,
                                                                                  allow_unicode=True)


# ---- reading and checking a sweep file ------------------------------------------------------

def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every problem is one CharlmError line naming the key."""
    path = Path(path)
    raw = load_yaml(path)
    where = f"sweep {path}"
    if not isinstance(raw, dict):
        raise CharlmError(f"{where}: expected a mapping with parameters: and base: or config:")
    for key in raw:
        if key not in SWEEP_KEYS:
            raise CharlmError(f"{where}: unknown key '{key}'{did_you_mean(str(key), SWEEP_KEYS)}"
                              f" (keys: {', '.join(SWEEP_KEYS)})")
    base, fixed, given = _base_config(raw, path, where)
    method = str(raw.get("method", "tpe"))
    if method not in METHODS:
        raise CharlmError(f"{where}: method must be one of {', '.join(METHODS)}, got '{method}'"
                          f"{did_you_mean(method, METHODS)}")
    metric = str(raw.get("metric", "val_loss"))
    if metric not in METRICS:
        raise CharlmError(f"{where}: metric must be val_loss (the best validation loss, minimised), got '{metric}'")
    pruner = _pruner_spec(raw.get("pruner", "none"), where)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CharlmError(f"{where}: seed must be a whole number, got {seed!r}")

    spec_params = raw.get("parameters")
    if not isinstance(spec_params, dict) or not spec_params:
        raise CharlmError(f"{where}: parameters must map config keys to {{values: [...]}} or"
                          " {distribution: ..., min: ..., max: ...}")
    parameters = [_parameter(str(key), value, base, fixed, where) for key, value in spec_params.items()]
    if method == "grid":
        for parameter in parameters:
            if parameter.values is None and parameter.distribution != "int":
                raise CharlmError(f"{where}: a grid needs a list for {parameter.key}: give {{values: [...]}},"
                                  " or use method: random or tpe")
        trials = math.prod(len(p.grid_values()) for p in parameters)
    else:
        trials = _count(raw, "trials", 20, where)
    name = str(raw.get("name") or path.stem)
    return SweepSpec(name=name, base=base, given=given, method=method, trials=trials, metric=metric, pruner=pruner,
                     parameters=parameters, seed=seed, workers=_count(raw, "workers", 1, where),
                     heartbeat=_count(raw, "heartbeat", HEARTBEAT, where), raw=raw)


def _count(raw: dict[str, Any], key: str, default: int, where: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CharlmError(f"{where}: {key} must be a whole number >= 1, got {value!r}")
    return value


def _base_config(raw: dict[str, Any], path: Path, where: str) -> tuple[Config, dict[str, Any], frozenset[str]]:
    """What every trial starts from: defaults <- base file <- inline config <- data <- set; the set
    keys; and every key those gave."""
    base, given = Config(), set()
    if raw.get("base") is not None:
        base_path = Path(str(raw["base"]))
        if not base_path.is_absolute() and not base_path.exists():
            base_path = path.parent / base_path  # relative to the sweep file, when not to the working folder
        given |= apply_mapping(base, load_yaml(base_path), f"config {base_path}")
    given |= apply_mapping(base, raw.get("config"), f"{where}: config")
    if raw.get("data") is not None:
        given |= apply_mapping(base, {"data": raw["data"]}, f"{where}: data")
    fixed = raw.get("set") or {}
    if not isinstance(fixed, dict):
        raise CharlmError(f"{where}: set must be a mapping of section.key: value")
    for key, value in fixed.items():
        set_key(base, str(key), value, f"{where}: set")
        given.add(str(key))
    validate(base)
    return base, fixed, frozenset(given)


def _pruner_spec(value: Any, where: str) -> dict[str, Any]:
    spec = {"type": value} if not isinstance(value, dict) else dict(value)
    kind = str(spec.get("type", "none"))
    if kind not in PRUNERS:
        raise CharlmError(f"{where}: pruner must be one of {', '.join(PRUNERS)}, got '{kind}'"
                          f"{did_you_mean(kind, PRUNERS)}")
    allowed = {"type", "startup_trials", "warmup_steps", "reduction_factor"}
    for key in spec:
        if key not in allowed:
            raise CharlmError(f"{where}: pruner: unknown key '{key}'{did_you_mean(str(key), allowed)}")
    result = {"type": kind, "startup_trials": spec.get("startup_trials", 2), "warmup_steps": spec.get("warmup_steps", 0),
              "reduction_factor": spec.get("reduction_factor", 3)}
    for key in ("startup_trials", "warmup_steps", "reduction_factor"):
        if not isinstance(result[key], int) or isinstance(result[key], bool) or result[key] < 0:
            raise CharlmError(f"{where}: pruner.{key} must be a whole number >= 0, got {result[key]!r}")
    return result


def _check_value(base: Config, key: str, value: Any, where: str) -> Any:
    """Apply ``value`` to a copy of the base config and validate it; return it as the config stores it."""
    trial = copy.deepcopy(base)
    try:
        set_key(trial, key, value, f"{where}: parameters")
        validate(trial)
    except CharlmError as exc:
        raise CharlmError(f"{where}: parameters.{key} = {value!r}: {exc}") from None
    section, name = key.split(".", 1)
    return getattr(getattr(trial, section), name)


def _parameter(key: str, spec: Any, base: Config, fixed: dict, where: str) -> Parameter:
    _check_key(key, where)
    if key in fixed:
        raise CharlmError(f"{where}: {key} is both in set: and in parameters: keep one")
    if not isinstance(spec, dict):
        raise CharlmError(f"{where}: parameters.{key} must be {{values: [...]}} or {{distribution: ..., min: ..., max: ...}}")
    if "values" in spec:
        extra = set(spec) - {"values"}
        if extra:
            raise CharlmError(f"{where}: parameters.{key}: give values or a distribution, not both ({', '.join(map(str, extra))})")
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise CharlmError(f"{where}: parameters.{key}.values must be a non-empty list")
        checked = [_check_value(base, key, value, where) for value in values]
        if any(isinstance(v, (list, dict)) for v in checked):
            raise CharlmError(f"{where}: parameters.{key}.values must be plain values")
        if len(set(map(repr, checked))) != len(checked):
            raise CharlmError(f"{where}: parameters.{key}.values has repeats: list each value once")
        return Parameter(key, values=checked)
    allowed = {"distribution", "min", "max", "step"}
    for name in spec:
        if name not in allowed:
            raise CharlmError(f"{where}: parameters.{key}: unknown key '{name}'{did_you_mean(str(name), allowed)}")
    distribution = str(spec.get("distribution"))
    if distribution not in DISTRIBUTIONS:
        raise CharlmError(f"{where}: parameters.{key}.distribution must be one of {', '.join(DISTRIBUTIONS)},"
                          f" got '{distribution}'{did_you_mean(distribution, DISTRIBUTIONS)}")
    if "min" not in spec or "max" not in spec:
        raise CharlmError(f"{where}: parameters.{key} needs min: and max:")
    low, high = spec["min"], spec["max"]
    number = int if distribution == "int" else (int, float)
    for label, value in (("min", low), ("max", high)):
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            kind = "a whole number" if distribution == "int" else "a number"
            raise CharlmError(f"{where}: parameters.{key}.{label} must be {kind}, got {value!r}")
    if not low < high:
        raise CharlmError(f"{where}: parameters.{key}: min ({low}) must be below max ({high})")
    if distribution == "log_uniform" and low <= 0:
        raise CharlmError(f"{where}: parameters.{key}: a log_uniform range needs min > 0, got {low}")
    step = spec.get("step", 1)
    if distribution == "int" and (not isinstance(step, int) or step < 1):
        raise CharlmError(f"{where}: parameters.{key}.step must be a whole number >= 1, got {step!r}")
    for value in (low, high):  # both ends must be valid settings (e.g. dropout below 1)
        _check_value(base, key, value, where)
    return Parameter(key, distribution=distribution, low=low, high=high, step=step)


def _check_key(key: str, where: str) -> None:
    section, _, name = key.partition(".")
    fields = section_fields(Config())
    if section in fields and name in fields[section]:
        return
    set_key(Config(), key, None, f"{where}: parameters")  # an unknown key: this raises, with did-you-mean


def sweep_text(config: Config) -> "TextSource":
    """The text a sweep's trials train on (a named corpus is fetched once, here)."""
    from charlm.corpora import text_of

    return text_of(config, "the sweep has no text: give data: {path: FILE} (or corpus: NAME) in the sweep file")


def describe(spec: SweepSpec) -> str:
    """What --dry-run prints: the grid's trials, or the search space."""
    lines = [f"sweep '{spec.name}': {spec.method}, {spec.trials} trials, minimising {spec.metric},"
             f" pruner {spec.pruner['type']}"]
    if spec.method == "grid":
        for params in spec.grid():
            lines.append(f"  - {format_params(params)}")
    else:
        for p in spec.parameters:
            lines.append(f"  {p.key}: {p.describe()}")
    path = spec.base.data.path
    text = (", ".join(path) if isinstance(path, list) else path) or (
        f"corpus {spec.base.data.corpus}" if spec.base.data.corpus else "no text set")
    lines.append(f"text: {text}")
    return "\n".join(lines)


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())
