import math

import torch

from charlm.distributed import Distributed
from charlm.state import LogWindow, TrainState

CPU = torch.device("cpu")


def _state() -> TrainState:
    state = TrainState.fresh(("forward", "backward"), CPU)
    state.step, state.tokens_seen, state.train_time = 12, 3072, 4.5
    state.best_val_loss, state.evals_since_best, state.bad_steps, state.skipped_steps = 2.25, 1, 0, 2
    state.carried["forward"] = (torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    state.window.add({"forward": torch.tensor(3.0), "backward": torch.tensor(3.5)}, torch.tensor(7.0), clip_norm=5.0)
    return state


def test_the_checkpoint_record_is_plain_and_mirrors_the_state():
    state = _state()
    record = state.to_checkpoint()
    assert record["carried"]["backward"] is None and all(t.device == CPU for t in record["carried"]["forward"])
    assert record["log_window"] == {"sums": {"loss_forward": 3.0, "loss_backward": 3.5, "grad_norm": 7.0,
                                             "clipped": 1.0, "good_steps": 1.0}}
    back = TrainState.from_checkpoint(record)
    for name in ("step", "tokens_seen", "train_time", "best_val_loss", "evals_since_best", "bad_steps",
                 "skipped_steps"):
        assert getattr(back, name) == getattr(state, name), name
    assert all(torch.equal(a, b) for a, b in zip(back.carried["forward"], state.carried["forward"]))
    assert back.to_checkpoint()["log_window"] == record["log_window"]


def test_evaluations_keep_the_best_and_count_patience():
    state = TrainState()
    assert state.record_eval(2.0) and state.best_val_loss == 2.0
    assert not state.record_eval(2.5) and not state.record_eval(2.0)  # not better is not an improvement
    assert state.evals_since_best == 2
    assert state.record_eval(1.5) and (state.best_val_loss, state.evals_since_best) == (1.5, 0)


def test_the_log_window_sums_good_steps_and_starts_afresh():
    window = LogWindow.empty(("forward",), CPU)
    window.add({"forward": torch.tensor(2.0)}, torch.tensor(1.0), clip_norm=5.0)
    window.add({"forward": torch.tensor(4.0)}, torch.tensor(6.0), clip_norm=5.0)
    window.steps = 3  # one more step that was skipped
    assert {k: v.item() for k, v in window.sums.items()} == {"loss_forward": 6.0, "grad_norm": 7.0, "clipped": 1.0,
                                                             "good_steps": 2.0}
    assert window.good_steps == 2
    window.reset()
    assert (window.steps, window.good_steps) == (0, 0) and all(v.item() == 0 for v in window.sums.values())


def test_the_device_verdict_leaves_a_bad_step_out_of_the_window():
    """train.nan_check log: the host never learns which step was bad; a NaN must not reach the sums."""
    window = LogWindow.empty(("forward",), CPU)
    window.add({"forward": torch.tensor(2.0)}, torch.tensor(1.0), clip_norm=5.0, good=torch.tensor(True))
    window.add({"forward": torch.tensor(math.nan)}, torch.tensor(math.inf), clip_norm=5.0, good=torch.tensor(False))
    assert {k: v.item() for k, v in window.sums.items()} == {"loss_forward": 2.0, "grad_norm": 1.0, "clipped": 0.0,
                                                             "good_steps": 1.0}


def test_a_window_saved_before_good_steps_joined_the_sums_reads_back():
    record = _state().to_checkpoint()
    sums = record["log_window"]["sums"]
    record["log_window"] = {"sums": {k: v for k, v in sums.items() if k != "good_steps"}, "good_steps": 1}
    assert TrainState.from_checkpoint(record).window.good_steps == 1


def test_a_rank_takes_its_own_streams_of_a_saved_state():
    saved = TrainState.from_checkpoint(_state().to_checkpoint())
    mine = saved.on_rank(("forward", "backward"), slice(2, 4), CPU)
    assert all(torch.equal(a, b[:, 2:4]) for a, b in zip(mine.carried["forward"], saved.carried["forward"]))
    assert mine.carried["backward"] is None
    assert mine.window.sums["grad_norm"].item() == 7.0 and mine.window.good_steps == 1
    assert not math.isnan(mine.window.started)


def test_one_process_gathers_the_state_it_has():
    state = _state()
    whole = state.gathered(Distributed())
    assert whole.carried["forward"] is state.carried["forward"]
    assert {k: v.item() for k, v in whole.window.sums.items()} == {k: v.item() for k, v in state.window.sums.items()}
