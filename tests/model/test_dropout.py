"""charlm/model/dropout.py: element dropout is torch's; a locked mask is one per sequence, the same at
every time step, scaled so that the expectation is unchanged."""

import pytest
import torch
import torch.nn.functional as F

from charlm.model.dropout import SequenceDropout, sequence_dropout


def test_element_dropout_is_torchs_own():
    x = torch.randn(4, 9, 6)
    torch.manual_seed(3)
    expected = F.dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(sequence_dropout(x, 0.3, locked=False, training=True), expected)


@pytest.mark.parametrize("time_dim", [0, 1])
def test_a_locked_mask_is_the_same_at_every_time_step(time_dim):
    x = torch.ones(5, 40, 64) if time_dim == 1 else torch.ones(40, 5, 64)
    torch.manual_seed(0)
    out = sequence_dropout(x, 0.25, locked=True, training=True, time_dim=time_dim)
    steps = out.unbind(time_dim)
    assert all(torch.equal(step, steps[0]) for step in steps)  # one mask per sequence...
    first = steps[0]
    kept = first[first != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))  # ...kept units scaled by 1 / (1 - p)
    assert 0.15 < (first == 0).float().mean() < 0.35
    assert not torch.equal(first[0], first[1])  # ...and a different one for each sequence


def test_a_locked_mask_is_drawn_as_a_naive_one_would_be():
    x = torch.randn(3, 7, 5)
    torch.manual_seed(11)
    out = sequence_dropout(x, 0.4, locked=True, training=True)
    torch.manual_seed(11)
    mask = torch.empty(3, 1, 5).bernoulli_(0.6) / 0.6
    assert torch.equal(out, x * mask)


def test_dropout_is_off_in_evaluation_and_at_zero():
    x = torch.randn(2, 5, 3)
    module = SequenceDropout(0.5, locked=True).eval()
    assert module(x) is x
    assert sequence_dropout(x, 0.0, locked=True, training=True) is x
    state = torch.random.get_rng_state()
    SequenceDropout(0.0, locked=False).train()(x)
    assert torch.equal(torch.random.get_rng_state(), state)  # p = 0 draws nothing: runs stay as they were
