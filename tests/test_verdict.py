import random

import torch

from charlm.verdict import PendingVerdicts


def test_the_device_counts_match_a_plain_count_of_the_same_steps():
    """Random good, bad and overflowed steps, read every 7 steps, against counting them in Python."""
    rng = random.Random(0)
    pending, run, step_of_last = PendingVerdicts(torch.device("cpu"), run=2), 2, 0
    window = {"skipped": 0, "overflows": 0, "longest": 2}
    for step in range(1, 200):
        kind = rng.choice(["good"] * 5 + ["bad", "bad", "overflow"])
        loss, norm = (float("nan"), 1.5 * step) if kind == "bad" else (0.5, 2.0)
        pending.add(torch.tensor(kind == "bad"), torch.tensor(kind == "overflow"), step, torch.tensor(loss),
                    torch.tensor(norm))
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
    pending.add(torch.tensor(True), torch.tensor(False), 9, torch.tensor(float("inf")), torch.tensor(3.0))
    got = pending.read()
    assert (got.run, got.longest_run, got.last_step, got.skipped) == (5, 5, 9, 1) and got.last_loss == float("inf")
