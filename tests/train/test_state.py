"""The parts of where a run stands (charlm/train/state.py), each saved and restored as torch's own are."""

import math

import torch

from charlm.train.distributed import Distributed
from charlm.train.state import LogWindow, RandomState, Streams, TrainState

CPU = torch.device("cpu")
ONE = Distributed()


def test_the_counters_mirror_themselves():
    state = TrainState(step=12, tokens_seen=3072, train_time=4.5, best_val_loss=2.25, evals_since_best=1,
                       skipped_steps=2, overflow_steps=1)
    record = state.state_dict()
    back = TrainState()
    back.load_state_dict(record)
    assert back == state and all(isinstance(v, (int, float)) for v in record.values())


def test_evaluations_keep_the_best_and_count_patience():
    state = TrainState()
    assert state.record_eval(2.0) and state.best_val_loss == 2.0
    assert not state.record_eval(2.5) and not state.record_eval(2.0)  # not better is not an improvement
    assert state.evals_since_best == 2
    assert state.record_eval(1.5) and (state.best_val_loss, state.evals_since_best) == (1.5, 0)


def test_streams_are_saved_whole_and_a_rank_takes_its_own_back():
    streams = Streams(("forward", "backward"), ONE, slice(0, 4), CPU)
    streams.carried["forward"] = (torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    record = streams.state_dict()
    assert record["backward"] is None and all(t.device == CPU and t.dtype == torch.float32 for t in record["forward"])
    mine = Streams(("forward", "backward"), ONE, slice(2, 4), CPU)
    mine.load_state_dict(record)
    assert all(torch.equal(a, b[:, 2:4]) for a, b in zip(mine.carried["forward"], record["forward"]))
    assert mine.carried["backward"] is None


def test_a_bad_step_carries_zeros_and_a_good_one_the_state_cut_from_its_graph():
    streams = Streams(("forward",), ONE, slice(0, 2), CPU)
    h = torch.ones(1, 2, 3, requires_grad=True) * 2
    streams.carried["forward"] = (h,)
    streams.carry(torch.tensor(False))
    assert torch.equal(streams.carried["forward"][0], h.detach()) and not streams.carried["forward"][0].requires_grad
    streams.carry(torch.tensor(True))
    assert (streams.carried["forward"][0] == 0).all()
    streams.reset()
    assert streams.carried == {"forward": None}


def test_the_log_window_sums_good_steps_only_and_starts_afresh():
    window = LogWindow(("forward",), CPU, ONE)
    window.add({"forward": torch.tensor(2.0)}, torch.tensor(1.0), 5.0, torch.tensor(True))
    window.add({"forward": torch.tensor(4.0)}, torch.tensor(6.0), 5.0, torch.tensor(True))
    window.add({"forward": torch.tensor(math.nan)}, torch.tensor(math.inf), 5.0, torch.tensor(False))  # a bad step
    assert window.totals() == {"loss_forward": 6.0, "grad_norm": 7.0, "clipped": 1.0, "good_steps": 2.0}
    saved = window.state_dict()
    window.reset()
    assert window.steps == 0 and all(v.item() == 0 for v in window.sums.values())
    back = LogWindow(("forward",), CPU, ONE)
    back.load_state_dict(saved)
    assert back.totals() == saved


def test_the_random_state_comes_back():
    random = RandomState(ONE)
    saved = random.state_dict()
    first = torch.rand(3)
    random.load_state_dict(saved)
    assert torch.equal(torch.rand(3), first) and len(saved) == 1
