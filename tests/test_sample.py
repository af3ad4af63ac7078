import pytest
import torch

from charlm.model import CharRNN
from charlm.sample import filter_logits, generate, make_generator


def test_top_k_keeps_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, 1.0, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, 1.0, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, top_p=0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, top_p=1.0)).all()


def test_temperature_sharpens():
    logits = torch.tensor([[1.0, 2.0]])
    cold = torch.softmax(filter_logits(logits, 0.1), -1)
    hot = torch.softmax(filter_logits(logits, 10.0), -1)
    assert cold[0, 1] > 0.99 and hot[0, 1] < 0.6


def _model():
    torch.manual_seed(0)
    return CharRNN(vocab_size=6, hidden_size=16, num_layers=2)


def test_same_seed_same_text():
    model = _model()
    runs = [torch.stack(list(generate(model, [0, 1], 50, 3, 1.0, generator=make_generator(7)))) for _ in range(2)]
    other = torch.stack(list(generate(model, [0, 1], 50, 3, 1.0, generator=make_generator(8))))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], other)
    assert runs[0].shape == (50, 3)


def test_stepwise_generation_matches_full_forward():
    model = _model().eval()
    ids = torch.stack(list(generate(model, [2], 20, 1, greedy=True))).squeeze(1)
    sequence = torch.cat([torch.tensor([2]), ids])
    logits, _ = model(sequence[None])
    assert torch.equal(logits[0, :-1].argmax(-1), ids)  # greedy = argmax of the full forward pass


def test_draw_follows_the_distribution_and_never_picks_a_filtered_token():
    from charlm.sample import draw

    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    logits = probs.log().expand(20_000, -1)
    ids = draw(logits, make_generator(0))
    counts = torch.bincount(ids, minlength=4).float() / len(ids)
    assert torch.allclose(counts, probs, atol=0.015)
    assert counts[3] == 0
    kept_two = filter_logits(probs.log()[None], 1.0, top_k=2).expand(5_000, -1)
    assert set(draw(kept_two, make_generator(1)).tolist()) == {0, 1}


def test_a_draw_rounded_up_to_the_total_falls_on_the_last_possible_token(monkeypatch):
    """u * total can round up to total itself; then the last token with any probability is drawn,
    never a filtered one after it (the old clamp took the vocabulary's last token)."""
    from charlm.sample import draw

    logits = torch.tensor([[0.0, 1.0, float("-inf"), float("-inf")], [0.0, 0.0, 0.0, 0.0]])
    monkeypatch.setattr(torch, "rand", lambda size, **kwargs: torch.ones(size, dtype=kwargs.get("dtype")))
    assert draw(logits).tolist() == [1, 3]
