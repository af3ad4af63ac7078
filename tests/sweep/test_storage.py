"""Sweeps across machines: several `charlm sweep` workers (separate processes, each with its own -o, as
machines would be) sharing one study on SQLite and on a real PostgreSQL (tests/postgres.py), workers
killed mid-trial, a database restarted mid-sweep, and the one-line errors of a database that cannot
be used."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from charlm.errors import CharlmError
from charlm.sweep import storage
from tests.postgres import cluster_or_skip, free_port
from tests.sweep.test_sweep import _charlm, text  # noqa: F401  (text: the fixture)

ROOT = Path(__file__).resolve().parents[2]
GRID12 = ("method: grid\nheartbeat: 2\nparameters:\n  model.cell: {values: [gru, lstm, rnn_tanh]}\n"
          "  train.lr: {values: [0.003, 0.005, 0.01, 0.02]}\n")
SIX = "method: grid\nheartbeat: 2\nparameters:\n  model.cell: {values: [gru, lstm, rnn_tanh]}\n  train.lr: {values: [0.005, 0.01]}\n"


def _sweep(tmp_path, text, body, steps):
    fast = ("{model.size: fixed, train.max_steps: %d, train.max_epochs: null, train.eval_interval: 20,"
            " model.num_layers: 1, model.hidden_size: 16, train.batch_size: 8, train.seq_len: 16,"
            " train.sample_length: 0, train.device: cpu, train.warmup_steps: 0, train.checkpoint_interval: 10,"
            " train.threads: 1}") % steps
    path = tmp_path / "sweep.yaml"
    path.write_text(f"data: {{path: {text}}}\nset: {fast}\n{body}")
    return path


@pytest.fixture(scope="module")
def postgres():
    cluster = cluster_or_skip()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request, tmp_path):
    """A storage URL several workers share: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres").database()


class Worker:
    """One `charlm sweep` process (a machine), in a session of its own so that it can be killed whole."""

    def __init__(self, sweep: Path, out: Path, url: str):
        self.sweep, self.out, self.url = sweep, out, url
        self.logs: list[str] = []
        self.start()

    def start(self) -> None:
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "charlm", "sweep", str(self.sweep), "-o", str(self.out), "--storage", self.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    def finish(self, timeout: float = 150) -> subprocess.CompletedProcess:
        out, err = self.process.communicate(timeout=timeout)
        self.logs.append(err)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)

    def kill(self, whole: bool) -> None:
        """SIGKILL the worker and its trial (a machine gone), or the worker alone (its trial is then told to
        stop: it saves its checkpoint first)."""
        if whole:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.kill()
        self.finish()


def _trials(url: str, name: str = "sweep"):
    import optuna

    return optuna.load_study(study_name=name, storage=storage.with_driver(url)).get_trials(deepcopy=False)


def _completed_once(trials, size: int) -> list:
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    points = Counter(tuple(sorted(t.params.items())) for t in complete)
    assert len(points) == size and set(points.values()) == {1}, points
    return complete


@pytest.mark.slow
def test_workers_started_at_once_run_each_grid_point_once(tmp_path, text, shared):
    sweep = _sweep(tmp_path, text, SIX, steps=20)
    workers = [Worker(sweep, tmp_path / f"machine-{i}", shared) for i in range(3)]
    results = [worker.finish() for worker in workers]
    assert all(r.returncode == 0 for r in results), [r.stderr[-800:] for r in results]
    trials = _trials(shared)
    assert len(trials) == 6  # not one point asked twice
    _completed_once(trials, 6)
    report = _charlm("sweep", sweep, "-o", tmp_path / "elsewhere", "--report", "--storage", shared)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert "host" in lines[0] and len(lines) == 7 and all(os.uname().nodename in line for line in lines[1:])
    ran_in = {Path(line.split()[-1]).parent.name for line in lines[1:]}
    assert ran_in <= {"machine-0", "machine-1", "machine-2"} and len(ran_in) >= 2


@pytest.mark.slow
def test_a_search_stops_at_its_trial_count_whatever_the_workers(tmp_path, text, shared):
    body = "method: random\ntrials: 4\nheartbeat: 2\nparameters:\n  train.lr: {distribution: log_uniform, min: 1.0e-3, max: 3.0e-2}\n"
    sweep = _sweep(tmp_path, text, body, steps=20)
    workers = [Worker(sweep, tmp_path / f"machine-{i}", shared) for i in range(3)]
    assert all(worker.finish().returncode == 0 for worker in workers)
    trials = _trials(shared)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.slow
def test_a_trial_whose_heartbeat_stops_is_taken_up_by_another_machine(tmp_path, text, shared):
    from charlm.sweep import load_sweep
    from charlm.sweep.study import Study

    spec = load_sweep(_sweep(tmp_path, text, SIX.replace("heartbeat: 2", "heartbeat: 1"), steps=20))
    gone = Study(spec, shared, echo=lambda line: None)
    number, params = gone.take()  # its machine takes it, beats once (at the asking) and is never heard from again
    lines = []
    other = Study(spec, shared, echo=lines.append)
    assert other.take()[1] != params  # within the grace period it is alive: the next point
    time.sleep(storage.GRACE_BEATS + 1.5)  # neither trial beats (no trial process runs them here)
    again, same = other.take()  # both failed and queued again, the first first
    assert same == params and again > number and not lines
    stopped = next(r for r in other.rows() if r.number == number)
    assert stopped.state == "INTERRUPTED" and other.counts() == (0, 1, 1)


def _wait_for_checkpoint(worker: Worker, deadline: float) -> None:
    """Until the worker's trial has saved a checkpoint since the worker (re)started: mid-trial."""
    while not any(p.stat().st_mtime > worker.started for p in worker.out.glob("trial-*/last.pt")):
        assert time.time() < deadline and worker.process.poll() is None, "no trial checkpointed in time"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_worker_s_trials_are_taken_up_and_resume_exactly(tmp_path, text, postgres):
    from charlm.train import train
    from charlm.train.checkpoint import Checkpoint

    url = postgres.database()
    sweep = _sweep(tmp_path, text, GRID12, steps=600)
    workers = [Worker(sweep, tmp_path / f"machine-{i}", url) for i in range(3)]
    victim, deadline = workers[0], time.time() + 100
    for whole in (True, False):  # the machine gone with its trial; then the worker alone
        _wait_for_checkpoint(victim, deadline)
        victim.kill(whole)
        victim.start()  # the machine comes back: a worker started later joins the study
    results = [worker.finish() for worker in workers]
    assert all(r.returncode == 0 for r in results), [r.stderr[-800:] for r in results]
    trials = _trials(url)
    complete = _completed_once(trials, 12)
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert len(stopped) == 2 and not any(t.user_attrs.get("error") for t in stopped)
    for trial in stopped:  # each finished in the directory it stopped in, as if it had never stopped
        again = next(t for t in complete if t.params == trial.params)
        assert again.user_attrs["dir"] == trial.user_attrs["dir"]
        config = Checkpoint.load(Path(again.user_attrs["dir"]) / "last.pt").config
        fresh = train(config, text, tmp_path / f"fresh-{trial.number}", progress=False)
        assert fresh.best_val_loss == again.value


@pytest.mark.slow
def test_a_sweep_outlives_a_database_restart(tmp_path, text, postgres):
    url = postgres.database()
    sweep = _sweep(tmp_path, text, SIX, steps=400)
    workers = [Worker(sweep, tmp_path / f"machine-{i}", url) for i in range(3)]
    _wait_for_checkpoint(workers[0], time.time() + 60)
    postgres.restart()
    results = [worker.finish() for worker in workers]
    assert all(r.returncode == 0 for r in results), [r.stderr[-800:] for r in results]
    trials = _trials(url)
    assert len(trials) == 6
    _completed_once(trials, 6)
    said = "".join(r.stderr for r in results) + "".join(p.read_text() for p in tmp_path.glob("machine-*/*/train.log"))
    assert "sweep storage unreachable" in said and "sweep storage back after" in said


@pytest.mark.slow
def test_a_database_that_cannot_be_used_is_one_line_before_any_trial(tmp_path, text, postgres):
    sweep = _sweep(tmp_path, text, SIX, steps=20)
    cases = {postgres.url("postgres", port=free_port()): "cannot reach the database server",
             postgres.url("postgres", password="wrong"): "refused the user's password",
             postgres.url("no_such_db"): 'database "no_such_db" does not exist'}
    for url, said in cases.items():
        result = _charlm("sweep", sweep, "-o", tmp_path / "out", "--storage", url)
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert "wrong" not in result.stderr and storage.redact(url) in result.stderr  # no password shown
        assert not list((tmp_path / "out").glob("trial-*"))


def test_a_missing_driver_is_named(monkeypatch):
    monkeypatch.setattr(storage, "_installed", lambda module: False)
    with pytest.raises(CharlmError, match=r"needs a PostgreSQL driver for Python, and psycopg2 is not installed"):
        storage.with_driver("postgresql://u:secret@db/charlm")
    monkeypatch.setattr(storage, "_installed", lambda module: module == "psycopg")
    assert storage.with_driver("postgresql://u@db/x") == "postgresql+psycopg://u@db/x"  # the driver there
    assert storage.with_driver("postgres://u@db/x") == "postgresql+psycopg://u@db/x"
    assert storage.with_driver("sqlite:///a.db") == "sqlite:///a.db"
    assert storage.redact("postgresql://u:secret@db/x") == "postgresql://u:***@db/x"


def test_patience_waits_out_a_database_that_went_away(monkeypatch):
    import sqlalchemy.exc

    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    lines, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return "read"
    patience = storage.Patience("postgresql://u:pw@db/x", lines.append)
    assert patience("reading the trials", flaky) == "read" and len(calls) == 4
    assert len(lines) == 2 and "unreachable while reading the trials" in lines[0] and "back after" in lines[1]
    assert "pw" not in lines[0] and patience.since_trouble() < 5
    with pytest.raises(ValueError):  # not the connection: no waiting
        patience("x", lambda: (_ for _ in ()).throw(ValueError("a bug")))
    gone = storage.Patience("sqlite:///x.db", lines.append, limit=-1)
    with pytest.raises(CharlmError, match="gave up on the sweep storage"):
        gone("x", lambda: (_ for _ in ()).throw(sqlalchemy.exc.OperationalError("", {}, Exception("gone"))))
