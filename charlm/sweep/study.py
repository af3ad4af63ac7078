"""A sweep's Optuna study: the one module of charlm that speaks Optuna.

The study lives in storage (SQLite inside the sweep directory by default, any SQLAlchemy URL with
``--storage``: charlm/sweep/storage.py), so re-running a sweep resumes it and several machines can
work on one study. ``Study`` is the scheduler's side of it and ``TrialRecorder`` a trial process's
side; both address trials by their number. A trial that stopped before its end (a signal here, or a
heartbeat that stopped anywhere) is failed and queued again as a copy of itself (Optuna's
retry callback: the same parameters and attributes), which the next scheduler to ask
takes up. What a trial carries besides its parameters (user attributes): ``scheduler_host`` and
``scheduler_pid`` (the scheduler that took it), ``host``/``pid``/``dir`` (its trial process; a
re-run starts with its predecessor's, so it finds that run directory), ``rerun_of`` (the interrupted
trial it runs again, in studies from before the heartbeat), ``interrupted``, ``error``, and at the end
``steps``, ``seconds``, ``stop_reason`` and ``parameters`` (the model's size).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError
from charlm.sweep.results import TrialRow
from charlm.sweep.spec import SweepSpec
from charlm.sweep.storage import (GRACE_BEATS, Patience, StudyLock, describe_failure, open_storage, optuna_module as
                                  _optuna, redact, with_driver)


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


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


def interrupted(trial: Any) -> bool:
    """Stopped before its end, to run again: by a signal here (marked so), or failed for its heartbeat
    (a failure with no error recorded: every other way a trial fails records one)."""
    attrs = trial.user_attrs
    return trial.state.name == "FAIL" and bool(attrs.get("interrupted") or not attrs.get("error"))


class Study:
    """The sweep's study, opened (or, with ``create``, made) in ``storage_url``. A study of the same
    name made from another sweep file is refused. Everything that must not interleave with another
    machine's scheduler runs under the study's lock; everything that reads or writes waits out a
    database that went away (``Patience``)."""

    def __init__(self, spec: SweepSpec, storage_url: str, create: bool = True, echo: Callable[[str], None] = print):
        self.spec, self.url, self.given_url = spec, with_driver(storage_url), storage_url
        self.lock, self.patience = StudyLock(self.url, spec.name), Patience(storage_url, echo)
        self.last_stale_check = 0.0
        try:
            with self.lock:
                self.storage = open_storage(self.url, spec.heartbeat)
                self.study = self._load(create)
        except CharlmError:
            raise
        except Exception as exc:  # SQLAlchemy's and the drivers' errors vary
            raise CharlmError(f"cannot open sweep storage: {describe_failure(exc, storage_url)}") from None
        self._study_id = self.storage.get_study_id_from_name(spec.name)

    def _load(self, create: bool) -> Any:
        optuna, spec = _optuna(), self.spec
        options = {"study_name": spec.name, "storage": self.storage, "sampler": _sampler(spec),
                   "pruner": make_pruner(spec.pruner)}
        if create:
            study = optuna.create_study(direction="minimize", load_if_exists=True, **options)
        else:
            try:
                study = optuna.load_study(**options)
            except KeyError:
                raise CharlmError(f"no sweep named '{spec.name}' in {redact(self.given_url)}: run `charlm sweep`"
                                  " first") from None
        fingerprint = json.dumps(spec.raw, sort_keys=True, default=str)
        saved = study.user_attrs.get("sweep")
        if saved is None:
            study.set_user_attr("sweep", fingerprint)
        elif saved != fingerprint:
            raise CharlmError(f"the study '{spec.name}' in {redact(self.given_url)} was started from a different sweep"
                              " file: use another -o/--out (or name: in the sweep file) for a new sweep")
        return study

    def _trials(self, *states: str) -> list[Any]:
        optuna = _optuna()
        wanted = tuple(getattr(optuna.trial.TrialState, s) for s in states) or None
        return self.patience("reading the trials", lambda: self.study.get_trials(deepcopy=False, states=wanted))

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def counts(self) -> tuple[int, int, int]:
        """(finished trials that count towards the total, trials running anywhere, trials queued to run)."""
        settled = running = waiting = 0
        for trial in self._trials():
            state = trial.state.name
            if state in ("COMPLETE", "PRUNED") or (state == "FAIL" and not interrupted(trial)):
                settled += 1
            elif state == "RUNNING":
                running += 1
            elif state == "WAITING":
                waiting += 1
        return settled, running, waiting

    def done(self) -> bool:
        """Every trial of the sweep has finished (a trial running anywhere may yet need taking over)."""
        settled, running, waiting = self.counts()
        return settled >= self.spec.trials and not running and not waiting

    def take(self) -> tuple[int, dict[str, Any]] | None:
        """Under the study's lock: fail the trials whose heartbeat stopped and queue this machine's
        interrupted ones (both to run again), then a trial for this machine if the study wants one
        more: a queued one first. None: nothing to start now."""
        def locked() -> tuple[int, dict[str, Any]] | None:
            with self.lock:
                self._settle()
                settled, running, waiting = self.counts()
                if not waiting and settled + running >= self.spec.trials:
                    return None
                return self._ask()
        return self.patience("asking for a trial", locked)

    def _settle(self) -> None:
        """Stale trials failed (and re-queued by the storage's callback), at most once a heartbeat, and
        only once the database has been reachable for a grace period: after an outage, live trials need
        a beat to show they are."""
        beat = self.spec.heartbeat
        if time.monotonic() - self.last_stale_check >= beat and self.patience.since_trouble() > (GRACE_BEATS + 1) * beat:
            _optuna().storages.fail_stale_trials(self.study)
            self.last_stale_check = time.monotonic()
        self._requeue_orphans()

    def settle_interrupted(self) -> int:
        """Trials left RUNNING by a process of this machine that is gone: marked and queued to run again,
        as the heartbeat would after its grace period (under the study's lock)."""
        def locked() -> int:
            with self.lock:
                return self._requeue_orphans()
        return self.patience("queueing interrupted trials", locked)

    def _requeue_orphans(self) -> int:
        optuna, host, count = _optuna(), socket.gethostname(), 0
        for trial in self._trials("RUNNING"):
            attrs = trial.user_attrs
            owner = ("host", "pid") if attrs.get("pid") else ("scheduler_host", "scheduler_pid")
            if attrs.get(owner[0]) != host or _alive(int(attrs.get(owner[1]) or 0)):
                continue
            trial_id = self._trial_id(trial.number)
            self.storage.set_trial_user_attr(trial_id, "interrupted", True)
            if self.storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                self.storage.get_heartbeat_stale_trial_callback()(self.study, self.storage.get_trial(trial_id))
                count += 1
        return count

    def _ask(self) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(_distributions(self.spec))
        # Its first heartbeat, from here: a trial that never beats is never stale, and one whose scheduler dies
        # before its process starts must be taken up like any other.
        self.storage.record_heartbeat(self._trial_id(trial.number))
        # A re-run carries the attributes of the trial it repeats (its directory among them); these are its own.
        for key, value in {"scheduler_host": socket.gethostname(), "scheduler_pid": os.getpid(), "pid": None,
                           "interrupted": False, "error": None}.items():
            trial.set_user_attr(key, value)
        return trial.number, trial.params

    def attrs(self, number: int) -> dict[str, Any]:
        return self._frozen(number).user_attrs

    def _frozen(self, number: int) -> Any:
        return self.patience("reading a trial", lambda: self.storage.get_trial(self._trial_id(number)))

    def is_running(self, number: int) -> bool:
        return self._frozen(number).state.name == "RUNNING"

    def fail(self, number: int, error: str) -> None:
        """A trial whose process ended without reporting."""
        def work() -> None:
            self.storage.set_trial_user_attr(self._trial_id(number), "error", error)
            self.storage.set_trial_state_values(self._trial_id(number), state=_optuna().trial.TrialState.FAIL)
        self.patience("recording a failed trial", work)

    def row(self, number: int) -> TrialRow:
        return _row(self._frozen(number))

    def rows(self) -> list[TrialRow]:
        """Every trial but the queued ones, best first (by the metric), then pruned, failed and interrupted."""
        rows = [_row(t) for t in self._trials() if t.state.name != "WAITING"]
        order = {"COMPLETE": 0, "RUNNING": 1, "PRUNED": 2, "FAIL": 3, "INTERRUPTED": 4}
        return sorted(rows, key=lambda r: (order.get(r.state, 5), r.value if r.value is not None else float("inf"),
                                           r.number))


def _row(trial: Any) -> TrialRow:
    state = "INTERRUPTED" if interrupted(trial) else trial.state.name
    attrs = trial.user_attrs
    return TrialRow(number=trial.number, params=dict(trial.params), value=trial.value, state=state,
                    steps=attrs.get("steps"), seconds=attrs.get("seconds"), parameters=attrs.get("parameters"),
                    directory=attrs.get("dir") or "", error=attrs.get("error"), host=attrs.get("host") or "")


class TrialRecorder:
    """One trial's side of the study, in the trial's own process: its heartbeat (from the moment it is
    made), its attributes, its evaluations for the pruner, and its outcome; each write waits out a
    database that went away."""

    def __init__(self, storage_url: str, study_name: str, number: int, pruner: dict[str, Any], heartbeat: int,
                 echo: Callable[[str], None] = print):
        optuna = _optuna()
        self.patience, self.echo = Patience(storage_url, echo), echo
        storage = self.patience("opening the study", lambda: open_storage(storage_url, heartbeat))
        self.study = self.patience("opening the study", lambda: optuna.load_study(
            study_name=study_name, storage=storage, pruner=make_pruner(pruner)))
        self.trial_id = self.patience("opening the study", lambda: storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study_name), number))
        self.trial = optuna.trial.Trial(self.study, self.trial_id)
        self.number, self.storage = number, storage
        self.beating = threading.Event()
        self.beats = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True, name="heartbeat")
        self.beats.start()

    def _beat(self, interval: int) -> None:
        """A heartbeat every ``interval`` seconds until the trial ends; a missed one is tried again next time
        (the grace period spans several)."""
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # the database is away: the scheduler's grace period allows for it
                pass
            if self.beating.wait(interval):
                return

    def stop(self) -> None:
        """No more heartbeats (the trial ended, or is stopping to run again elsewhere)."""
        self.beating.set()
        self.beats.join()

    def set(self, **attrs: Any) -> None:
        """Attributes of the trial; none once the study has given it up (its re-run records its own)."""
        try:
            for key, value in attrs.items():
                self.patience(f"recording {key}", lambda: self.trial.set_user_attr(key, value))
        except _optuna().exceptions.UpdateFinishedTrialError:
            pass

    def report(self, step: int, val_loss: float) -> bool:
        """Tell the pruner; True when it says this trial is hopeless, or when the study has given this trial
        up (its heartbeat came too late, and it is queued to run again): then it stops here."""
        try:
            self.patience("reporting an evaluation", lambda: self.trial.report(val_loss, step))
        except _optuna().exceptions.UpdateFinishedTrialError:
            self.echo(f"trial {self.number} was given up for its late heartbeat and queued to run again: stopping")
            return True
        return self.patience("asking the pruner", self.trial.should_prune)

    def fail(self, error: str) -> None:
        self.set(error=error)
        self._tell(state=_optuna().trial.TrialState.FAIL)

    def pruned(self) -> None:
        self._tell(state=_optuna().trial.TrialState.PRUNED)

    def complete(self, value: float) -> None:
        self._tell(value)

    def _tell(self, value: float | None = None, state: Any = None) -> None:
        self.stop()
        self.patience("recording the outcome", lambda: self._tell_once(value, state))

    def _tell_once(self, value: float | None, state: Any) -> None:
        if self.storage.get_trial(self.trial_id).state.is_finished():  # told already, before a lost reply
            return
        self.study.tell(self.number, value, state=state)
