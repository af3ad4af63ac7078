import os
import signal
import subprocess
import sys
import time

import pytest

from charlm.errors import CharlmError
from charlm.train.rundir import LOCK_NAME, RunLock, check_fresh, newest_checkpoint
from tests.conftest import tiny_checkpoint


def _hold_lock(directory):
    """A separate process that takes the run lock and then waits to be killed."""
    code = ("import sys, time; from pathlib import Path; from charlm.train.rundir import RunLock\n"
            "with RunLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_writer_is_refused_and_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(CharlmError, match=f"in use by another `charlm train` \\(pid {holder.pid} on "):
            with RunLock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the crashed holder's file is still there...
    with RunLock(tmp_path):  # ...but the lock died with its process
        pass
    with RunLock(tmp_path):  # and a normal exit releases it too
        pass


def test_fresh_run_refuses_a_directory_with_a_run(tmp_path):
    check_fresh(tmp_path)  # empty: fine
    (tmp_path / "notes.txt").write_text("mine")
    check_fresh(tmp_path)  # files that are not a run's: fine
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(CharlmError, match="stopped before its first checkpoint \\(metrics.jsonl\\)"):
        check_fresh(tmp_path)
    tiny_checkpoint(step=3).save(tmp_path / "best.pt")
    with pytest.raises(CharlmError, match="--resume"):
        check_fresh(tmp_path)


def test_resume_takes_the_newer_of_last_and_best(tmp_path):
    with pytest.raises(CharlmError, match="no last.pt or best.pt"):
        newest_checkpoint(tmp_path)
    tiny_checkpoint(step=1000).save(tmp_path / "last.pt")
    tiny_checkpoint(step=1250).save(tmp_path / "best.pt")
    path, checkpoint = newest_checkpoint(tmp_path)
    assert path.name == "best.pt" and checkpoint.step == 1250
    tiny_checkpoint(step=1250).save(tmp_path / "last.pt")
    assert newest_checkpoint(tmp_path)[0].name == "last.pt"  # a tie goes to last.pt
    (tmp_path / "last.pt").unlink()
    assert newest_checkpoint(tmp_path)[0].name == "best.pt"


def test_lock_file_names_its_holder(tmp_path):
    with RunLock(tmp_path):
        text = (tmp_path / LOCK_NAME).read_text()
    assert str(os.getpid()) in text and time.strftime("%Y-") in text


def test_resume_into_a_directory_in_use_says_so(tmp_path, capfd):
    from charlm.cli import main

    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(SystemExit):
            main(["train", "--resume", str(tmp_path), "--no-progress"])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert "is in use by another `charlm train`" in capfd.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(tmp_path / "nope")])
    assert "no run directory" in capfd.readouterr().err
