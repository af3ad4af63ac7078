"""Hyperparameter sweeps on Optuna: a YAML file in, ordinary run directories and a results table out.

``charlm sweep`` is the scheduler. It asks Optuna's sampler for each trial's parameters (one asker,
so a local grid never runs a point twice) and runs every trial as its own process
(``python -m charlm.sweep TRIAL.json``), at most ``--workers`` at a time. A trial process trains
with an evaluation hook that reports each val loss to Optuna and stops when the pruner says so,
then records its result in the study. The study lives in storage — SQLite inside the sweep
directory by default, any SQLAlchemy URL with ``--storage`` — so re-running the command resumes it
and several machines can work on one study.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.config import (
    Config, _did_you_mean, apply_mapping, format_duration, load_yaml, section_fields, set_key, validate,
)
from charlm.errors import CharlmError
from charlm.fsutil import atomic_write_text

SWEEP_KEYS = ("name", "base", "config", "data", "method", "trials", "metric", "pruner", "set", "parameters", "seed")
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
    method: str
    trials: int  # the grid's size for grid sweeps
    metric: str
    pruner: dict[str, Any]
    parameters: list[Parameter]
    seed: int
    raw: dict[str, Any] = field(default_factory=dict)  # as written, to recognise the same sweep on resume

    def grid(self) -> list[dict[str, Any]]:
        keys = [p.key for p in self.parameters]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(p.grid_values() for p in self.parameters))]


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
            raise CharlmError(f"{where}: unknown key '{key}'{_did_you_mean(str(key), SWEEP_KEYS)}"
                              f" (keys: {', '.join(SWEEP_KEYS)})")

    base = Config()
    if raw.get("base") is not None:
        base_path = Path(str(raw["base"]))
        if not base_path.is_absolute() and not base_path.exists():
            base_path = path.parent / base_path  # relative to the sweep file, when not to the working folder
        apply_mapping(base, load_yaml(base_path), f"config {base_path}")
    apply_mapping(base, raw.get("config"), f"{where}: config")
    if raw.get("data") is not None:
        apply_mapping(base, {"data": raw["data"]}, f"{where}: data")
    fixed = raw.get("set") or {}
    if not isinstance(fixed, dict):
        raise CharlmError(f"{where}: set must be a mapping of section.key: value")
    for key, value in fixed.items():
        set_key(base, str(key), value, f"{where}: set")
    validate(base)

    method = str(raw.get("method", "tpe"))
    if method not in METHODS:
        raise CharlmError(f"{where}: method must be one of {', '.join(METHODS)}, got '{method}'"
                          f"{_did_you_mean(method, METHODS)}")
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
        trials = raw.get("trials", 20)
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise CharlmError(f"{where}: trials must be a whole number >= 1, got {trials!r}")
    name = str(raw.get("name") or path.stem)
    return SweepSpec(name=name, base=base, method=method, trials=trials, metric=metric, pruner=pruner,
                     parameters=parameters, seed=seed, raw=raw)


def _pruner_spec(value: Any, where: str) -> dict[str, Any]:
    spec = {"type": value} if not isinstance(value, dict) else dict(value)
    kind = str(spec.get("type", "none"))
    if kind not in PRUNERS:
        raise CharlmError(f"{where}: pruner must be one of {', '.join(PRUNERS)}, got '{kind}'"
                          f"{_did_you_mean(kind, PRUNERS)}")
    allowed = {"type", "startup_trials", "warmup_steps", "reduction_factor"}
    for key in spec:
        if key not in allowed:
            raise CharlmError(f"{where}: pruner: unknown key '{key}'{_did_you_mean(str(key), allowed)}")
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
            raise CharlmError(f"{where}: parameters.{key}: unknown key '{name}'{_did_you_mean(str(name), allowed)}")
    distribution = str(spec.get("distribution"))
    if distribution not in DISTRIBUTIONS:
        raise CharlmError(f"{where}: parameters.{key}.distribution must be one of {', '.join(DISTRIBUTIONS)},"
                          f" got '{distribution}'{_did_you_mean(distribution, DISTRIBUTIONS)}")
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


# ---- Optuna ---------------------------------------------------------------------------------

def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _distributions(spec: SweepSpec) -> dict[str, Any]:
    optuna = _optuna()
    if spec.method == "grid":  # the grid sampler hands out grid points; all it needs is their lists
        return {p.key: optuna.distributions.CategoricalDistribution(p.grid_values()) for p in spec.parameters}
    result = {}
    for p in spec.parameters:
        if p.values is not None:
            result[p.key] = optuna.distributions.CategoricalDistribution(p.values)
        elif p.distribution == "int":
            result[p.key] = optuna.distributions.IntDistribution(int(p.low), int(p.high), step=p.step)
        else:
            result[p.key] = optuna.distributions.FloatDistribution(float(p.low), float(p.high),
                                                                 log=p.distribution == "log_uniform")
    return result


def _sampler(spec: SweepSpec):
    optuna = _optuna()
    if spec.method == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid_values() for p in spec.parameters}, seed=spec.seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    # constant_liar: trials still running count as bad guesses, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=spec.seed, constant_liar=True)


def make_pruner(pruner: dict[str, Any]):
    optuna = _optuna()
    if pruner["type"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner["startup_trials"],
                                           n_warmup_steps=pruner["warmup_steps"])
    if pruner["type"] == "hyperband":
        return optuna.pruners.HyperbandPruner(reduction_factor=pruner["reduction_factor"])
    return optuna.pruners.NopPruner()


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def _storage(url: str):
    optuna = _optuna()
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # a bad URL or an unreachable database: SQLAlchemy's errors vary
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CharlmError(f"cannot open sweep storage {url}: {first}; give an SQLAlchemy URL such as"
                          " sqlite:///study.db or postgresql://user@host/db") from None


def open_study(spec: SweepSpec, storage_url: str, create: bool = True):
    """The sweep's Optuna study; a study of the same name with other settings is refused."""
    optuna = _optuna()
    storage = _storage(storage_url)
    fingerprint = json.dumps(spec.raw, sort_keys=True, default=str)
    if create:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction="minimize",
                                    sampler=_sampler(spec), pruner=make_pruner(spec.pruner), load_if_exists=True)
    else:
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=_sampler(spec),
                                      pruner=make_pruner(spec.pruner))
        except KeyError:
            raise CharlmError(f"no sweep named '{spec.name}' in {storage_url}: run `charlm sweep` first") from None
    saved = study.user_attrs.get("sweep")
    if saved is None:
        study.set_user_attr("sweep", fingerprint)
    elif saved != fingerprint:
        raise CharlmError(f"the study '{spec.name}' in {storage_url} was started from a different sweep file:"
                          " use another -o/--out (or name: in the sweep file) for a new sweep")
    return study, storage


# ---- the scheduler --------------------------------------------------------------------------

@dataclass
class TrialRow:
    number: int
    params: dict[str, Any]
    value: float | None
    steps: int | None
    seconds: float | None
    parameters: int | None
    state: str
    directory: str


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _settle_interrupted(study, storage) -> int:
    """Trials left RUNNING by a process of this machine that is gone: mark them and queue a re-run."""
    optuna = _optuna()
    host, count = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if "pid" in attrs:  # its trial process started: is it still there?
            stale = attrs.get("host") == host and not _alive(int(attrs["pid"]))
        else:  # asked for, but no trial process ever took it up
            stale = attrs.get("scheduler_host") == host
        if stale:
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
            count += 1
    return count


def _counts(study) -> tuple[int, int]:
    """(finished trials that count towards the total, trials running anywhere)."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    settled = running = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (states.COMPLETE, states.PRUNED) or (
                trial.state == states.FAIL and not trial.user_attrs.get("interrupted")):
            settled += 1
        elif trial.state == states.RUNNING:
            running += 1
    return settled, running


def run_sweep(spec: SweepSpec, out_dir: Path, workers: int = 1, storage_url: str | None = None,
              echo=print) -> list[TrialRow]:
    """Run the sweep's remaining trials, ``workers`` at a time; return the results table's rows."""
    from charlm.rundir import RunLock

    optuna = _optuna()
    text = _text_path(spec.base)  # once, here: a missing file is one error, and a corpus is fetched once
    if spec.base.data.path:
        spec.base.data.path = str(text.resolve())  # trials find it whatever their working folder
    out_dir.mkdir(parents=True, exist_ok=True)
    storage_url = storage_url or default_storage(out_dir)
    with RunLock(out_dir):
        study, storage = open_study(spec, storage_url)
        atomic_write_text(out_dir / "sweep.yaml", _dump_yaml(spec.raw))
        _settle_interrupted(study, storage)
        settled, _ = _counts(study)
        queued = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        if settled or queued:
            echo(f"resuming sweep '{spec.name}': {settled} of {spec.trials} trials done"
                 + (f", {queued} interrupted trial(s) to re-run" if queued else ""))
        threads = spec.base.train.threads or max(1, (os.cpu_count() or 1) // workers)
        distributions = _distributions(spec)
        running: dict[int, tuple[subprocess.Popen, Any, Path]] = {}
        previous_handler = _stop_on_sigterm()
        try:
            while True:
                for number, (process, log_file, trial_dir) in list(running.items()):
                    if process.poll() is None:
                        continue
                    log_file.close()
                    del running[number]
                    _after_trial(study, storage, number, process.returncode, trial_dir, echo)
                settled, running_anywhere = _counts(study)
                enough = settled + running_anywhere >= spec.trials  # finished or under way, here or elsewhere
                if enough and not running:
                    break
                if enough or len(running) >= workers:
                    time.sleep(0.1)
                    continue
                trial = study.ask(distributions)
                storage.set_trial_user_attr(trial._trial_id, "scheduler_host", socket.gethostname())
                trial_dir, resume = _trial_dir(study, trial, out_dir)
                running[trial.number] = _launch(spec, storage_url, trial, trial_dir, resume, threads, echo)
        except KeyboardInterrupt:
            for process, _, _ in running.values():
                process.terminate()
            for process, log_file, _ in running.values():
                process.wait()
                log_file.close()
            _settle_interrupted(study, storage)
            echo(f"sweep interrupted: run the same command again to continue ({len(running)} trial(s) will"
                 " resume from their checkpoints)")
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
        rows = trial_rows(study)
        write_results(rows, spec, out_dir)
    return rows


def _trial_dir(study: Any, trial: Any, out_dir: Path) -> tuple[Path, bool]:
    """Where a trial runs: its own new directory, or, for the re-run of an interrupted trial that had
    saved a checkpoint, that trial's directory, resumed exactly where it stopped."""
    from charlm.rundir import RUN_FILES

    rerun_of = trial.user_attrs.get("rerun_of")
    while rerun_of is not None:
        previous = study.get_trials(deepcopy=False)[rerun_of]
        directory = previous.user_attrs.get("dir")
        if directory and any((Path(directory) / name).exists() for name in ("last.pt", "best.pt")):
            return Path(directory), True
        rerun_of = previous.user_attrs.get("rerun_of")
    trial_dir = out_dir / f"trial-{trial.number:04d}"
    if any((trial_dir / name).exists() for name in RUN_FILES):  # another study's leftovers: keep them
        trial_dir = out_dir / f"trial-{trial.number:04d}-{int(time.time())}"
    return trial_dir, False


def _stop_on_sigterm() -> Any:
    """SIGTERM stops the scheduler the way Ctrl-C does: trials are stopped, saved and queued again."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _launch(spec: SweepSpec, storage_url: str, trial: Any, trial_dir: Path, resume: bool, threads: int,
            echo) -> tuple:
    trial_dir.mkdir(parents=True, exist_ok=True)
    job = {"storage": storage_url, "study": spec.name, "trial": trial.number, "pruner": spec.pruner,
           "config": spec.base.to_dict(), "params": trial.params, "threads": threads, "dir": str(trial_dir),
           "resume": resume}
    atomic_write_text(trial_dir / "trial.json", json.dumps(job, indent=2, default=str))
    echo(f"trial {trial.number} {'resumed in ' + trial_dir.name if resume else 'started'}:"
         f" {_format_params(trial.params)}")
    log_file = open(trial_dir / "train.log", "a", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "charlm.sweep", str(trial_dir / "trial.json")],
                               stdout=log_file, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)})
    return process, log_file, trial_dir


def _after_trial(study, storage, number: int, returncode: int, trial_dir: Path, echo) -> None:
    optuna = _optuna()
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state == optuna.trial.TrialState.RUNNING and returncode == 130:  # stopped by a signal
        _settle_interrupted(study, storage)
        echo(f"trial {number} interrupted: it will run again (resumed from its checkpoint if it saved one)")
        return
    if trial.state == optuna.trial.TrialState.RUNNING:  # the trial process died before reporting
        storage.set_trial_user_attr(trial._trial_id, "error", f"trial process exited with {returncode}; see"
                                    f" {trial_dir / 'train.log'}")
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        trial = study.get_trials(deepcopy=False)[number]
    row = _row(trial)
    detail = {"COMPLETE": f"best val loss {row.value:.4f}" if row.value is not None else "done",
              "PRUNED": f"pruned at step {row.steps}",
              "FAIL": f"failed: {trial.user_attrs.get('error', 'see train.log')}"}.get(row.state, row.state)
    timing = f" ({format_duration(row.seconds)})" if row.seconds else ""
    echo(f"trial {number} {detail}{timing}")


# ---- one trial, in its own process ----------------------------------------------------------

def run_trial(job_path: Path) -> int:
    """Train one trial as the job file says, reporting evaluations to Optuna; the process's exit status."""
    from charlm.train import train

    optuna = _optuna()
    job = json.loads(job_path.read_text(encoding="utf-8"))
    storage = _storage(job["storage"])
    study = optuna.load_study(study_name=job["study"], storage=storage, pruner=make_pruner(job["pruner"]))
    frozen = study.get_trials(deepcopy=False)[job["trial"]]
    trial = optuna.trial.Trial(study, frozen._trial_id)
    for key, value in (("host", socket.gethostname()), ("pid", os.getpid()), ("dir", job["dir"])):
        trial.set_user_attr(key, value)
    trial_dir = Path(job["dir"])
    try:
        config = Config.from_dict(job["config"])
        for key, value in job["params"].items():
            set_key(config, key, value, "sweep parameter")
        if not config.train.threads:
            config.train.threads = job["threads"]
        validate(config)
        text = _text_path(config)

        def report(step: int, val_loss: float) -> bool:
            trial.report(val_loss, step)
            return trial.should_prune()

        result = train(config, text, trial_dir, resume=job.get("resume", False), progress=False, on_eval=report)
    except CharlmError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(job["trial"], state=optuna.trial.TrialState.FAIL)
        print(f"error: {exc}", file=sys.stderr)
        return 0  # recorded: the scheduler goes on with the next trial
    if result.stop_reason == "interrupted":
        return 130  # left RUNNING: the scheduler (this run or the next) queues it to run again
    trial.set_user_attr("steps", result.step)
    trial.set_user_attr("seconds", result.train_time)
    trial.set_user_attr("stop_reason", result.stop_reason)
    trial.set_user_attr("parameters", result.parameters)
    _write_hparams(trial_dir, job["params"], result.best_val_loss)
    if result.stop_reason == "pruned":
        study.tell(job["trial"], state=optuna.trial.TrialState.PRUNED)
    elif result.best_val_loss is None:
        trial.set_user_attr("error", "no evaluation ran: lower train.eval_interval or give more text")
        study.tell(job["trial"], state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(job["trial"], result.best_val_loss)
    return 0


def _text_path(config: Config) -> Path:
    from charlm.corpora import text_of

    return text_of(config, "the sweep has no text: give data: {path: FILE} (or corpus: NAME) in the sweep file")


def _write_hparams(run: Path, params: dict[str, Any], best: float | None) -> None:
    """The trial's parameters and result for TensorBoard's HParams view (tensorboard --logdir SWEEP_DIR)."""
    from torch.utils.tensorboard import SummaryWriter

    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    with SummaryWriter(log_dir=str(run / "tensorboard")) as writer:
        writer.add_hparams(clean, {"hparam/best_val_loss": best if best is not None else float("nan")},
                           run_name=".")


# ---- results --------------------------------------------------------------------------------

def _row(trial: Any) -> TrialRow:
    state = trial.state.name
    if state == "FAIL" and trial.user_attrs.get("interrupted"):
        state = "INTERRUPTED"
    return TrialRow(number=trial.number, params=dict(trial.params), value=trial.value, state=state,
                    steps=trial.user_attrs.get("steps"), seconds=trial.user_attrs.get("seconds"),
                    parameters=trial.user_attrs.get("parameters"), directory=trial.user_attrs.get("dir", ""))


def trial_rows(study: Any) -> list[TrialRow]:
    """Every trial, best first (by the metric), then pruned, failed and interrupted ones."""
    rows = [_row(t) for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
    order = {"COMPLETE": 0, "RUNNING": 1, "PRUNED": 2, "FAIL": 3, "INTERRUPTED": 4}
    return sorted(rows, key=lambda r: (order.get(r.state, 5), r.value if r.value is not None else math.inf, r.number))


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_format_value(v)}" for k, v in params.items())


def results_table(rows: list[TrialRow], spec: SweepSpec) -> str:
    keys = [p.key for p in spec.parameters]
    header = ["trial", *keys, "best val loss", "steps", "time", "params", "state", "directory"]
    lines = [header]
    for r in rows:
        lines.append([str(r.number), *(_format_value(r.params.get(k, "")) for k in keys),
                      f"{r.value:.4f}" if r.value is not None else "-", f"{r.steps:,}" if r.steps else "-",
                      format_duration(r.seconds) if r.seconds else "-",
                      f"{r.parameters / 1e6:.2f}M" if r.parameters else "-", r.state.lower(),
                      Path(r.directory).name if r.directory else "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def write_results(rows: list[TrialRow], spec: SweepSpec, out_dir: Path) -> None:
    """results.csv, and `best` (a link to the best trial's run directory, or a file naming it)."""
    buffer = io.StringIO()
    keys = [p.key for p in spec.parameters]
    writer = csv.writer(buffer)
    writer.writerow(["trial", *keys, "best_val_loss", "steps", "seconds", "parameters", "state", "directory"])
    for r in rows:
        writer.writerow([r.number, *(r.params.get(k, "") for k in keys), r.value if r.value is not None else "",
                         r.steps or "", r.seconds or "", r.parameters or "", r.state.lower(), r.directory])
    atomic_write_text(out_dir / "results.csv", buffer.getvalue())
    best = next((r for r in rows if r.state == "COMPLETE" and r.value is not None), None)
    if best is None or not best.directory:
        return
    target = Path(best.directory)
    link = out_dir / "best"
    temporary = out_dir / ".best.tmp"
    try:
        temporary.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, out_dir), temporary)
        os.replace(temporary, link)
    except OSError:  # no symlinks here (some Windows setups): a file that names it instead
        atomic_write_text(out_dir / "best.txt", str(target) + "\n")


def describe(spec: SweepSpec) -> str:
    """What --dry-run prints: the grid's trials, or the search space."""
    lines = [f"sweep '{spec.name}': {spec.method}, {spec.trials} trials, minimising {spec.metric},"
             f" pruner {spec.pruner['type']}"]
    if spec.method == "grid":
        for params in spec.grid():
            lines.append(f"  - {_format_params(params)}")
    else:
        for p in spec.parameters:
            lines.append(f"  {p.key}: {p.describe()}")
    text = spec.base.data.path or (f"corpus {spec.base.data.corpus}" if spec.base.data.corpus else "no text set")
    lines.append(f"text: {text}")
    return "\n".join(lines)


def _dump_yaml(raw: dict[str, Any]) -> str:
    import yaml

    return "# the sweep file this directory was made from\n" + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


if __name__ == "__main__":
    sys.exit(run_trial(Path(sys.argv[1])))
