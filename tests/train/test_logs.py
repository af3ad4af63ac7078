import json

import pytest

from charlm.errors import CharlmError
from charlm.train.logs import RunLog, read_metrics, truncate_metrics


def test_a_torn_or_garbled_line_is_skipped_by_the_reader(tmp_path):
    path = tmp_path / "metrics.jsonl"
    whole = [{"event": "train", "step": 5, "loss": 2.0}, {"event": "eval", "step": 10, "val_loss": 1.9}]
    path.write_text("".join(json.dumps(e) + "\n" for e in whole) + '{"event": "train", "st')  # killed mid-line
    assert read_metrics(path) == whole
    path.write_bytes(path.read_bytes() + b"\xff\xfe garbage\n[1, 2]\n")
    assert read_metrics(path) == whole
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_truncate_keeps_what_the_checkpoint_covers_and_drops_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = [{"event": "train", "step": s, "loss": 1.0} for s in (5, 10, 15)]
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"event": "tr')
    truncate_metrics(path, 10)
    assert path.read_text().endswith("\n")
    assert read_metrics(path) == events[:2]


def test_a_failed_append_is_one_line(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)

    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    log._file = FullDisk()
    with pytest.raises(CharlmError, match="cannot append to .*metrics.jsonl: No space left on device \\(free some"):
        log.event("train", 1, loss=1.0)


def test_resume_after_a_crash_hides_the_lost_steps_in_tensorboard(tmp_path, text_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from charlm.train import train
    from tests.train.test_loop import _at_steps, _train_poisoned, small_config

    overrides = {"train.max_steps": 30, "train.max_epochs": None, "train.log_interval": 5,
                 "train.checkpoint_interval": 10, "train.eval_interval": 1000}

    class Crash(Exception):
        pass

    def crash(trainer, losses):
        raise Crash

    with pytest.raises(Crash):  # dies during step 28: last.pt holds step 20, the logs reach 25
        _train_poisoned(small_config(**overrides), text_file, tmp_path / "run", _at_steps({28}, "forward", crash))
    assert [e["step"] for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train"][-1] == 25
    train(small_config(**overrides), text_file, tmp_path / "run", resume=True, progress=False)

    logged = {e["step"]: e["loss"] for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["event"] == "train"}
    assert sorted(logged) == [5, 10, 15, 20, 25, 30]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == [5, 10, 15, 20, 25, 30]  # the lost step 25 once, as redone
    assert all(s.value == pytest.approx(logged[s.step], rel=1e-6) for s in scalars)
