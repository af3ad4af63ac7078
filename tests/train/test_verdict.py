import random

import torch

from charlm.train.state import TrainState
from charlm.train.verdict import PendingVerdicts, Verdict, judge, settle


def _verdict(bad: bool, overflow: bool) -> Verdict:
    return Verdict(torch.tensor(not bad and not overflow), torch.tensor(bad), torch.tensor(overflow))


def test_the_verdict_of_a_step():
    inf, nan, one = torch.tensor(float("inf")), torch.tensor(float("nan")), torch.tensor(1.0)
    assert [v.item() for v in vars(judge(one, one, scaled=False)).values()] == [True, False, False]
    assert [v.item() for v in vars(judge(nan, one, scaled=False)).values()] == [False, True, False]
    assert [v.item() for v in vars(judge(one, inf, scaled=False)).values()] == [False, True, False]
    assert [v.item() for v in vars(judge(one, inf, scaled=True)).values()] == [False, False, True]  # the scale's
    assert [v.item() for v in vars(judge(nan, inf, scaled=True)).values()] == [False, True, False]


def test_one_divergence_rule_whenever_the_counts_are_read():
    """The same steps give the same counters read every step or in one window; a divergence stands."""
    kinds = [False, True, True, False, True, True, True, False]
    for every in (1, 8):
        state, pending, diverged = TrainState(), PendingVerdicts(torch.device("cpu")), []
        for step, bad in enumerate(kinds, 1):
            pending.add(_verdict(bad, False), step, torch.tensor(1.0), torch.tensor(1.0))
            if step % every == 0:
                diverged.append(settle(state, pending.read(), limit=3))
        assert diverged[-1] and state.bad_steps == 3 and state.skipped_steps == 5, every
        assert settle(state, pending.read(), limit=3)  # it stands


def test_the_device_counts_match_a_plain_count_of_the_same_steps():
    """Random good, bad and overflowed steps, read every 7 steps, against counting them in Python."""
    rng = random.Random(0)
    pending, run, step_of_last = PendingVerdicts(torch.device("cpu"), run=2), 2, 0
    window = {"skipped": 0, "overflows": 0, "longest": 2}
    for step in range(1, 200):
        kind = rng.choice(["good"] * 5 + ["bad", "bad", "overflow"])
        loss, norm = (float("nan"), 1.5 * step) if kind == "bad" else (0.5, 2.0)
        pending.add(_verdict(kind == "bad", kind == "overflow"), step, torch.tensor(loss), torch.tensor(norm))
        run = run + 1 if kind == "bad" else 0
        window["skipped"] += kind == "bad"
        window["overflows"] += kind == "overflow"
        window["longest"] = max(window["longest"], run)
        step_of_last = step if kind == "bad" else step_of_last
        if step % 7 == 0:
            got = pending.read()
            assert (got.skipped, got.overflows, got.run, got.longest_run) == (
                window["skipped"], window["overflows"], run, window["longest"]), step
            if window["skipped"]:
                assert got.last_step == step_of_last and got.last_grad_norm == 1.5 * step_of_last
            window, step_of_last = {"skipped": 0, "overflows": 0, "longest": run}, 0


def test_a_fresh_count_resumes_the_saved_run_of_bad_steps():
    pending = PendingVerdicts(torch.device("cpu"), run=4)
    pending.add(_verdict(True, False), 9, torch.tensor(float("inf")), torch.tensor(3.0))
    got = pending.read()
    assert (got.run, got.longest_run, got.last_step, got.skipped) == (5, 5, 9, 1) and got.last_loss == float("inf")
