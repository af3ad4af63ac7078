import pytest
import torch
from torch import nn

from charlm.train.averaging import WeightAverage


def test_the_average_follows_its_formula_with_the_ramped_decay():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9)
    expected = [p.detach().clone() for p in model.parameters()]
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update()
        decay = min(0.9, (1 + n) / (10 + n))  # the warm-up ramp, then the set decay
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
    assert average.updates == 30
    for shadow, e in zip(average.shadow, expected):
        torch.testing.assert_close(shadow, e)


def test_an_update_the_device_judged_void_changes_nothing():
    """train.nan_check log: the average is updated every step, and a step the device judged bad must
    neither move it nor count towards its ramp (the weights are changed here to show they are ignored)."""
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9)
    average.update(torch.tensor(True))
    before = [s.clone() for s in average.shadow]
    with torch.no_grad():
        model.weight.fill_(5.0)
    average.update(torch.tensor(False))
    assert average.updates == 1 and all(torch.equal(a, b) for a, b in zip(before, average.shadow))


def test_applied_swaps_the_average_in_and_always_back():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update()
    raw = [p.detach().clone() for p in model.parameters()]
    with average.applied():
        assert all(torch.equal(p, s) for p, s in zip(model.parameters(), average.shadow))
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))
    with pytest.raises(RuntimeError), average.applied():
        raise RuntimeError("an evaluation failed")
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))


def test_an_average_restored_from_its_state_carries_on_the_same():
    torch.manual_seed(1)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.8)
    for _ in range(5):
        with torch.no_grad():
            model.weight.add_(0.1)
        average.update()
    saved = average.state_dict()
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    assert saved["updates"] == 5 and torch.equal(saved["model"]["weight"], average.shadow[0])
    restored = WeightAverage(model, decay=0.8)
    restored.load_state_dict(saved)
    assert restored.updates == 5 and all(torch.equal(a, b) for a, b in zip(restored.shadow, average.shadow))
    assert all(torch.equal(v, raw[k]) for k, v in model.state_dict().items())  # the raw weights stay


def test_without_averaging_the_weights_are_published_as_they_are():
    from charlm.train.averaging import NoAverage, weight_average

    model = nn.Linear(3, 2)
    nothing = weight_average(model, 0.0)
    assert isinstance(nothing, NoAverage) and nothing.state_dict() is None
    nothing.update(torch.tensor(True))
    with nothing.applied():
        pass
    assert isinstance(weight_average(model, 0.9), WeightAverage)
