"""A sweep's Optuna study: the one module of charlm that speaks Optuna.

The study lives in storage (SQLite inside the sweep directory by default, any SQLAlchemy URL with
``--storage``), so re-running a sweep resumes it and several machines can work on one study.
``Study`` is the scheduler's side of it and ``TrialRecorder`` a trial process's side; both address
trials by their number. What a trial carries besides its parameters (user attributes):
``scheduler_host`` (the machine that asked for it), ``host``/``pid``/``dir`` (its trial process),
``rerun_of`` (the interrupted trial it runs again), ``interrupted``, ``error``, and at the end
``steps``, ``seconds``, ``stop_reason`` and ``parameters`` (the model's size).
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError
from charlm.sweep.results import TrialRow
from charlm.sweep.spec import SweepSpec


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Study:
    """The sweep's study, opened (or, with ``create``, made) in ``storage_url``. A study of the same
    name made from another sweep file is refused."""

    def __init__(self, spec: SweepSpec, storage_url: str, create: bool = True):
        optuna = _optuna()
        self.spec, self.url = spec, storage_url
        self.storage = _storage(storage_url)
        options = {"study_name": spec.name, "storage": self.storage, "sampler": _sampler(spec),
                   "pruner": make_pruner(spec.pruner)}
        if create:
            self.study = optuna.create_study(direction="minimize", load_if_exists=True, **options)
        else:
            try:
                self.study = optuna.load_study(**options)
            except KeyError:
                raise CharlmError(f"no sweep named '{spec.name}' in {storage_url}: run `charlm sweep` first") from None
        self._study_id = self.storage.get_study_id_from_name(spec.name)
        fingerprint = json.dumps(spec.raw, sort_keys=True, default=str)
        saved = self.study.user_attrs.get("sweep")
        if saved is None:
            self.study.set_user_attr("sweep", fingerprint)
        elif saved != fingerprint:
            raise CharlmError(f"the study '{spec.name}' in {storage_url} was started from a different sweep file:"
                              " use another -o/--out (or name: in the sweep file) for a new sweep")

    def _trials(self, *states: str) -> list[Any]:
        optuna = _optuna()
        wanted = tuple(getattr(optuna.trial.TrialState, s) for s in states) or None
        return self.study.get_trials(deepcopy=False, states=wanted)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def counts(self) -> tuple[int, int]:
        """(finished trials that count towards the total, trials running anywhere)."""
        settled = running = 0
        for trial in self._trials():
            state = trial.state.name
            if state in ("COMPLETE", "PRUNED") or (state == "FAIL" and not trial.user_attrs.get("interrupted")):
                settled += 1
            elif state == "RUNNING":
                running += 1
        return settled, running

    def queued(self) -> int:
        """Trials queued to run again (they were interrupted)."""
        return len(self._trials("WAITING"))

    def settle_interrupted(self) -> int:
        """Trials left RUNNING by a process of this machine that is gone: marked and queued to run again."""
        host, count = socket.gethostname(), 0
        for trial in self._trials("RUNNING"):
            attrs = trial.user_attrs
            if "pid" in attrs:  # its trial process started: is it still there?
                stale = attrs.get("host") == host and not _alive(int(attrs["pid"]))
            else:  # asked for, but no trial process ever took it up
                stale = attrs.get("scheduler_host") == host
            if stale:
                self.storage.set_trial_user_attr(self._trial_id(trial.number), "interrupted", True)
                self.study.tell(trial.number, state=_optuna().trial.TrialState.FAIL)
                self.study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
                count += 1
        return count

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new trial (or a queued re-run) for this machine: its number and parameters."""
        trial = self.study.ask(_distributions(self.spec))
        trial.set_user_attr("scheduler_host", socket.gethostname())
        return trial.number, trial.params

    def attrs(self, number: int) -> dict[str, Any]:
        return self.study.get_trials(deepcopy=False)[number].user_attrs

    def is_running(self, number: int) -> bool:
        return self.study.get_trials(deepcopy=False)[number].state.name == "RUNNING"

    def fail(self, number: int, error: str) -> None:
        """A trial whose process ended without reporting."""
        self.storage.set_trial_user_attr(self._trial_id(number), "error", error)
        self.study.tell(number, state=_optuna().trial.TrialState.FAIL)

    def row(self, number: int) -> TrialRow:
        return _row(self.study.get_trials(deepcopy=False)[number])

    def rows(self) -> list[TrialRow]:
        """Every trial but the queued ones, best first (by the metric), then pruned, failed and interrupted."""
        rows = [_row(t) for t in self._trials() if t.state.name != "WAITING"]
        order = {"COMPLETE": 0, "RUNNING": 1, "PRUNED": 2, "FAIL": 3, "INTERRUPTED": 4}
        return sorted(rows, key=lambda r: (order.get(r.state, 5), r.value if r.value is not None else float("inf"),
                                           r.number))


def _row(trial: Any) -> TrialRow:
    state = trial.state.name
    if state == "FAIL" and trial.user_attrs.get("interrupted"):
        state = "INTERRUPTED"
    attrs = trial.user_attrs
    return TrialRow(number=trial.number, params=dict(trial.params), value=trial.value, state=state,
                    steps=attrs.get("steps"), seconds=attrs.get("seconds"), parameters=attrs.get("parameters"),
                    directory=attrs.get("dir", ""), error=attrs.get("error"))


class TrialRecorder:
    """One trial's side of the study, in the trial's own process: its attributes, its evaluations
    for the pruner, and its outcome."""

    def __init__(self, storage_url: str, study_name: str, number: int, pruner: dict[str, Any]):
        optuna = _optuna()
        storage = _storage(storage_url)
        self.study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(pruner))
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.number = number

    def set(self, **attrs: Any) -> None:
        for key, value in attrs.items():
            self.trial.set_user_attr(key, value)

    def report(self, step: int, val_loss: float) -> bool:
        """Tell the pruner; True when it says this trial is hopeless."""
        self.trial.report(val_loss, step)
        return self.trial.should_prune()

    def fail(self, error: str) -> None:
        self.set(error=error)
        self.study.tell(self.number, state=_optuna().trial.TrialState.FAIL)

    def pruned(self) -> None:
        self.study.tell(self.number, state=_optuna().trial.TrialState.PRUNED)

    def complete(self, value: float) -> None:
        self.study.tell(self.number, value)
