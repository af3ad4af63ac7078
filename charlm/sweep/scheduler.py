"""The sweep scheduler: what ``charlm sweep`` runs.

It takes each trial from the study (under the study's lock, so however many schedulers share a
study, on one machine or many, a grid point runs once and a search stops at its trial count) and
runs it as its own process (``python -m charlm.sweep.trial``), at most ``workers`` at a time, each
an ordinary run directory in the sweep directory. Ctrl-C or SIGTERM stops the trials (each saves its
checkpoint) and queues them to run again: running the same command later continues the sweep, and
each interrupted trial resumes from its own checkpoint. A scheduler that dies takes its trials with
it; their heartbeats stop, and another scheduler takes them up (resumed where their directory can
be reached from it). A scheduler stays until every trial of the sweep has finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from charlm.fsutil import atomic_write_text
from charlm.sweep.results import TrialRow, write_results
from charlm.sweep.spec import SweepSpec, format_params, sweep_text
from charlm.sweep.study import Study, default_storage
from charlm.sweep.trial import SCHEDULER_PID
from charlm.train.rundir import RUN_FILES, RunLock
from charlm.train.signals import StopRequest

Echo = Callable[[str], None]
POLL = 0.5  # seconds between looks at the trials and the study


def run_sweep(spec: SweepSpec, out_dir: Path, workers: int = 1, storage_url: str | None = None,
              echo: Echo = print) -> list[TrialRow]:
    """Run the sweep's remaining trials, ``workers`` at a time; return the results table's rows."""
    text = sweep_text(spec.base)  # once, here: a missing file is one error, and a corpus is fetched once
    if spec.base.data.path:
        spec.base.data.path = text.absolute().config_value()  # trials find it whatever their working folder
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir):
        study = Study(spec, storage_url or default_storage(out_dir), echo=echo)
        atomic_write_text(out_dir / "sweep.yaml", spec.to_yaml())
        study.settle_interrupted()
        settled, running, queued = study.counts()
        if settled or queued or running:
            echo(f"resuming sweep '{spec.name}': {settled} of {spec.trials} trials done"
                 + (f", {running} running elsewhere" if running else "")
                 + (f", {queued} interrupted trial(s) to re-run" if queued else ""))
        pool = TrialPool(study, out_dir, workers, echo)
        with StopRequest() as stop:
            pool.run(stop)
            if stop.requested:
                stopped = pool.stop()
                echo(f"sweep interrupted: run the same command again to continue ({stopped} trial(s) will"
                     " resume from their checkpoints)")
                raise KeyboardInterrupt
        rows = study.rows()
        write_results(rows, spec, out_dir)
    return rows


def report(spec: SweepSpec, out_dir: Path, storage_url: str | None = None, echo: Echo = print) -> list[TrialRow]:
    """The results so far (``--report``), results.csv rewritten where this machine has the sweep's directory
    (a machine that only looks at a shared study gets the table alone); nothing runs."""
    study = Study(spec, storage_url or default_storage(out_dir), create=False, echo=echo)
    rows = study.rows()
    if out_dir.is_dir():
        write_results(rows, spec, out_dir)
    return rows


class TrialPool:
    """The trial processes this scheduler runs, by trial number."""

    def __init__(self, study: Study, out_dir: Path, workers: int, echo: Echo):
        self.study, self.spec, self.out_dir = study, study.spec, out_dir.resolve()  # other machines read its paths
        self.workers, self.echo = workers, echo
        self.threads = self.spec.base.train.threads or max(1, (os.cpu_count() or 1) // workers)
        self.running: dict[int, tuple[subprocess.Popen, IO[str], Path]] = {}

    def run(self, stop: StopRequest) -> None:
        """Launch trials while the study wants more and this machine has room, until every trial of the
        sweep has finished (here or elsewhere: one running on another machine may yet need taking over
        from it); or until ``stop`` is requested."""
        while not stop.requested:
            self.collect()
            taken = self.study.take() if len(self.running) < self.workers else None
            if taken is not None:
                self.launch(*taken)
                continue
            if not self.running and self.study.done():
                return
            stop.wait(POLL)

    def launch(self, number: int, params: dict[str, Any]) -> None:
        trial_dir, resume = self.trial_dir(number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        job = {"storage": self.study.url, "study": self.spec.name, "trial": number, "pruner": self.spec.pruner,
               "heartbeat": self.spec.heartbeat, "config": self.spec.base.to_dict(), "given": sorted(self.spec.given),
               "params": params, "threads": self.threads, "dir": str(trial_dir), "resume": resume}
        atomic_write_text(trial_dir / "trial.json", json.dumps(job, indent=2, default=str))
        where = trial_dir.name if trial_dir.parent == self.out_dir else str(trial_dir)
        self.echo(f"trial {number} {'resumed in ' + where if resume else 'started'}: {format_params(params)}")
        log_file = open(trial_dir / "train.log", "a", encoding="utf-8")
        process = subprocess.Popen([sys.executable, "-m", "charlm.sweep.trial", str(trial_dir / "trial.json")],
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(self.threads),
                                        SCHEDULER_PID: str(os.getpid())})
        self.running[number] = (process, log_file, trial_dir)

    def trial_dir(self, number: int) -> tuple[Path, bool]:
        """Where a trial runs: its own new directory, or, for the re-run of an interrupted trial that had
        saved a checkpoint, that trial's directory, resumed exactly where it stopped."""
        attrs: dict[str, Any] | None = self.study.attrs(number)
        while attrs is not None:  # a re-run carries its predecessor's directory (older studies: rerun_of names it)
            directory = attrs.get("dir")
            if directory and any((Path(directory) / name).exists() for name in ("last.pt", "best.pt")):
                return Path(directory), True  # reachable from here: resumed
            attrs = self.study.attrs(attrs["rerun_of"]) if attrs.get("rerun_of") is not None else None
        trial_dir = self.out_dir / f"trial-{number:04d}"
        if any((trial_dir / name).exists() for name in RUN_FILES):  # another study's leftovers: keep them
            trial_dir = self.out_dir / f"trial-{number:04d}-{int(time.time())}"
        return trial_dir, False

    def collect(self) -> None:
        """Take in the trials whose processes have ended."""
        for number, (process, log_file, trial_dir) in list(self.running.items()):
            if process.poll() is None:
                continue
            log_file.close()
            del self.running[number]
            if self.study.is_running(number):  # the trial process did not record an outcome
                if process.returncode == 130:  # stopped by a signal: the next take() queues it again
                    self.echo(f"trial {number} interrupted: it will run again (resumed from its checkpoint if it"
                              " saved one)")
                    continue
                self.study.fail(number, f"trial process exited with {process.returncode}; see"
                                        f" {trial_dir / 'train.log'}")
            self.echo(f"trial {number} {self.study.row(number).outcome()}")

    def stop(self) -> int:
        """Stop every running trial (each saves its checkpoint first) and queue them to run again."""
        for process, _, _ in self.running.values():
            process.terminate()
        for process, log_file, _ in self.running.values():
            process.wait()
            log_file.close()
        self.study.settle_interrupted()
        return len(self.running)
