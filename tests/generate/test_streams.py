import pytest
import torch

from charlm.generate.sample import generate
from charlm.generate.streams import ROW_BLOCK, Draw, StreamSet, draw_rows, filter_rows, rows_agree, stream_seed
from charlm.model.fast_step import FastStep
from charlm.model.network import CharRNN


def _finite(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> list[list[bool]]:
    return torch.isfinite(filter_rows(logits, [top_k] * len(logits), [top_p] * len(logits))).tolist()


def test_top_k_keeps_k():
    assert _finite(torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]]), top_k=2) == [[False, True, False, True, False]]


def test_top_p_keeps_the_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert _finite(logits, top_p=0.5) == [[True, False, False, False]]
    assert _finite(logits, top_p=0.75) == [[True, True, False, False]]
    assert _finite(logits, top_p=0.81) == [[True, True, True, False]]
    assert _finite(logits, top_p=1.0) == [[True] * 4]


def test_each_row_is_filtered_with_its_own_settings():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(3, -1)
    kept = torch.isfinite(filter_rows(logits, [1, 0, 0], [1.0, 0.75, 1.0])).tolist()
    assert kept == [[True, False, False, False], [True, True, False, False], [True] * 4]


def test_draw_follows_the_distribution_and_never_picks_a_filtered_token():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    uniform = torch.rand(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ids = draw_rows(probs.log().expand(20_000, -1), uniform)
    counts = torch.bincount(ids, minlength=4).float() / len(ids)
    assert torch.allclose(counts, probs, atol=0.015)
    assert counts[3] == 0
    kept_two = filter_rows(probs.log()[None], [2], [1.0]).expand(5_000, -1)
    assert set(draw_rows(kept_two, uniform[:5_000]).tolist()) == {0, 1}


def test_a_draw_rounded_up_to_the_total_falls_on_the_last_possible_token():
    """u * total can round up to total itself; then the last token with any probability is drawn,
    never a filtered one after it."""
    logits = torch.tensor([[0.0, 1.0, float("-inf"), float("-inf")], [0.0, 0.0, 0.0, 0.0]])
    assert draw_rows(logits, torch.ones(2, dtype=torch.float64)).tolist() == [1, 3]


def test_temperature_sharpens():
    model = _model("lstm", 16)
    counts = {}
    for temperature in (0.05, 5.0):
        tokens = torch.stack(list(generate(model, [0], 300, 1, temperature, seed=0))).squeeze(1)
        counts[temperature] = len(set(tokens.tolist()))
    assert counts[0.05] < counts[5.0]


def test_stream_seeds_keep_the_first_and_spread_the_rest():
    assert stream_seed(7, 0) == 7 and stream_seed(None, 3) is None
    seeds = {stream_seed(seed, i) for seed in range(20) for i in range(20)}
    assert len(seeds) == 400


def _model(cell: str, hidden: int, layers: int = 2, block: str = "plain") -> CharRNN:
    torch.manual_seed(0)
    model = CharRNN(30, cell, hidden, num_layers=layers, block=block, ffn=2 if block == "residual" else 0).eval()
    with torch.no_grad():  # saturated gates: a rounding difference would show in the draws
        for name, parameter in model.named_parameters():
            if "weight" in name:
                parameter.mul_(3.0)
    return model


@pytest.mark.parametrize("cell,hidden,block", [("lstm", 100, "plain"), ("gru", 52, "plain"), ("rnn_tanh", 64, "plain"),
                                               ("rnn_relu", 32, "plain"), ("mingru", 44, "plain"),
                                               ("minlstm", 36, "residual")])
def test_a_stream_draws_the_same_text_alone_and_among_others(cell, hidden, block):
    """Same seed, same text: alone (as `charlm sample` draws it) or among up to 63 other streams with
    other settings that come and go, moving it between rows."""
    model = _model(cell, hidden, block=block)
    alone = torch.stack(list(generate(model, [1, 2, 3], 200, 1, 0.9, top_k=12, seed=5))).squeeze(1).tolist()
    streams = StreamSet(model, capacity=64)
    chance = torch.Generator().manual_seed(1)
    streams.add([1, 2, 3], [("me", Draw(0.9, top_k=12, seed=5))])
    made, others = [], 0
    for _ in range(200):
        while len(streams) < 64 and torch.rand(1, generator=chance).item() < 0.5:
            others += 1
            prime = torch.randint(0, 30, (int(torch.randint(1, 9, (1,), generator=chance)),), generator=chance)
            streams.add(prime.tolist(), [(others, Draw(0.5 + others % 3, top_p=0.9 if others % 2 else 1.0,
                                                       greedy=others % 7 == 0, seed=others))])
        drawn = streams.tick()
        made.append(next(d.token for d in drawn if d.key == "me"))
        for d in drawn:
            if d.key != "me" and torch.rand(1, generator=chance).item() < 0.05:
                streams.remove(d.key)
    assert others > 60
    assert made == alone


def test_blocks_of_row_block_rows_give_the_same_rows_as_one_call():
    model = _model("lstm", 40)
    one, blocked = StreamSet(model, capacity=16), StreamSet(model, capacity=16)
    blocked.agree = {rows: False for rows in (8, 12, 16)}
    for streams in (one, blocked):
        streams.add([1, 2], [(i, Draw(seed=i)) for i in range(9)])
    for _ in range(30):
        assert [d.token for d in one.tick()] == [d.token for d in blocked.tick()]
    assert all(rows_agree(FastStep(model), rows) for rows in range(ROW_BLOCK, 65, ROW_BLOCK))


def test_logprobs_are_the_stream_distribution_at_its_temperature():
    model = _model("gru", 24)
    streams = StreamSet(model)
    streams.add([4, 5], [("a", Draw(0.7, seed=1, logprobs=3))])
    logits, _ = model(torch.tensor([[4, 5]]))
    expected = torch.log_softmax(logits[0, -1] / 0.7, dim=-1)
    drawn = streams.tick()[0]
    assert drawn.logprob == pytest.approx(expected[drawn.token].item(), abs=1e-5)
    assert [i for i, _ in drawn.top] == torch.topk(expected, 3).indices.tolist()


def test_the_number_of_threads_does_not_change_a_text():
    """charlm serve runs the model on one thread fewer than charlm sample by default."""
    model = _model("lstm", 64)
    threads = torch.get_num_threads()
    texts = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            texts.append(torch.stack(list(generate(model, [1, 2], 100, 8, 1.0, seed=3))).tolist())
    finally:
        torch.set_num_threads(threads)
    assert texts[0] == texts[1]
