"""One trial of a sweep, in its own process: ``python -m charlm.sweep.trial DIR/trial.json``.

The scheduler writes the job file (the study, the trial's number, its config and parameters) and
starts this; it trains with an evaluation hook that reports each val loss to the pruner and stops
when told, then records the outcome in the study. Exit status 130: interrupted (the trial stays
RUNNING and the scheduler queues it to run again, resumed from its checkpoint). From the start to
the outcome it records a heartbeat in the study (charlm/sweep/storage.py).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from charlm.config import Config, validate, with_budget_defaults, with_settings
from charlm.errors import CharlmError
from charlm.sweep.spec import HEARTBEAT, sweep_text
from charlm.sweep.study import TrialRecorder


SCHEDULER_PID = "CHARLM_SCHEDULER_PID"  # the environment variable naming the scheduler that started this


def end_with_scheduler() -> None:
    """A SIGTERM to this process when its scheduler dies, however it dies (Linux), so that the trial saves its
    checkpoint and stops: its heartbeat stops with it and another scheduler takes it up. A scheduler already
    gone: the same, at once."""
    scheduler = os.environ.get(SCHEDULER_PID)
    if not scheduler or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(scheduler):
        os.kill(os.getpid(), signal.SIGTERM)


def run_trial(job_path: Path) -> int:
    """Train one trial as the job file says, reporting evaluations to the study; the exit status."""
    job = json.loads(job_path.read_text(encoding="utf-8"))
    recorder = TrialRecorder(job["storage"], job["study"], job["trial"], job["pruner"], job.get("heartbeat", HEARTBEAT),
                             echo=lambda line: print(line, file=sys.stderr))
    recorder.set(host=socket.gethostname(), pid=os.getpid(), dir=job["dir"])
    from charlm.train import train  # torch: after the first heartbeat
    trial_dir = Path(job["dir"])
    try:
        config, given = _config(job)
        result = train(config, sweep_text(config), trial_dir, resume=job.get("resume", False), progress=False,
                       on_eval=recorder.report, given=given)
    except CharlmError as exc:
        recorder.fail(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 0  # recorded: the scheduler goes on with the next trial
    if result.stop_reason == "interrupted":
        recorder.stop()
        return 130
    recorder.set(steps=result.step, seconds=result.train_time, stop_reason=result.stop_reason,
                 parameters=result.parameters)
    _write_hparams(trial_dir, job["params"], result.best_val_loss)
    if result.stop_reason == "pruned":
        recorder.pruned()
    elif result.best_val_loss is None:
        recorder.fail("no evaluation ran: lower train.eval_interval or give more text")
    else:
        recorder.complete(result.best_val_loss)
    return 0


def _config(job: dict[str, Any]) -> tuple[Config, frozenset[str]]:
    """The sweep's base config with this trial's parameters, its share of the CPU threads unless set;
    and the keys the sweep gave (what it set, and the parameters), which model.size auto leaves alone."""
    given = frozenset(job["given"]) | set(job["params"])
    config = with_settings(Config.from_dict(job["config"]), job["params"], "sweep parameter")
    with_budget_defaults(config, given)
    if not config.train.threads:
        config.train.threads = job["threads"]
    validate(config)
    return config, given


def _write_hparams(run: Path, params: dict[str, Any], best: float | None) -> None:
    """The trial's parameters and result for TensorBoard's HParams view (tensorboard --logdir SWEEP_DIR)."""
    from torch.utils.tensorboard import SummaryWriter

    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    with SummaryWriter(log_dir=str(run / "tensorboard")) as writer:
        writer.add_hparams(clean, {"hparam/best_val_loss": best if best is not None else float("nan")},
                           run_name=".")


if __name__ == "__main__":
    end_with_scheduler()
    sys.exit(run_trial(Path(sys.argv[1])))
