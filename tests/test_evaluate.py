import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.data.lines import lines_vocab, split_into_lines
from charlm.data.stream import Stream
from charlm.data.vocab import Vocab
from charlm.evaluate import EvalResult, evaluate, evaluate_directions
from charlm.model.network import CharRNN

CPU = torch.device("cpu")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return CharRNN(12, "lstm", hidden_size=16, num_layers=2, bidirectional=True, dropout=0.3)


def test_windows_with_carried_state_give_the_loss_of_one_pass_over_the_text(model):
    """1,300 tokens in one stream are read in windows of 512 with the state carried across; the mean
    must be the naive one: one forward pass over the whole text, every next character scored once."""
    tokens = np.random.default_rng(0).integers(0, 12, size=1300).astype(np.uint8)
    result = evaluate(model, Stream(tokens), batch_size=1, device=CPU)
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(tokens.astype(np.int64))[None]
        logits, _ = model(x[:, :-1])
        naive = F.cross_entropy(logits[0], x[0, 1:]).item()
        backward, _ = model(x.flip(1)[:, :-1], direction="backward")
        naive_backward = F.cross_entropy(backward[0], x.flip(1)[0, 1:]).item()
    assert result.chars == 1299 and result.loss == pytest.approx(naive, rel=1e-5)
    assert evaluate(model, Stream(tokens), 1, CPU, direction="backward").loss == pytest.approx(naive_backward, rel=1e-5)


def test_the_model_is_evaluated_without_dropout_and_given_back_as_it_was(model):
    tokens = np.random.default_rng(1).integers(0, 12, size=400).astype(np.uint8)
    model.train()
    first = evaluate(model, Stream(tokens), 4, CPU).loss
    assert model.training and evaluate(model, Stream(tokens), 4, CPU).loss == first


def test_whole_lines_are_scored_each_on_its_own_end_marker_included():
    text = "abc\nbb\nc\nabca\n"
    stream_vocab = Vocab.from_text(text)
    vocab = lines_vocab(stream_vocab)
    lines = split_into_lines(stream_vocab.encode(text), stream_vocab, vocab)
    torch.manual_seed(0)
    model = CharRNN(len(vocab), "gru", hidden_size=8).eval()
    total = count = 0.0
    with torch.no_grad():
        for i in range(len(lines)):
            ids = torch.tensor([vocab.marker, *lines.line(i).tolist(), vocab.marker])[None]
            logits, _ = model(ids[:, :-1])
            total += F.cross_entropy(logits[0], ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    result = evaluate(model, lines, batch_size=3, device=CPU)
    assert result.chars == count == 10 + 4 and result.loss == pytest.approx(total / count, rel=1e-5)


def test_every_direction_of_a_model_is_reported(model):
    tokens = np.random.default_rng(2).integers(0, 12, size=300).astype(np.uint8)
    results = evaluate_directions(model, Stream(tokens), 4, CPU)
    assert set(results) == {"forward", "backward"}


def test_bits_and_perplexity_follow_from_nats():
    result = EvalResult(loss=math.log(4), chars=10)
    assert result.bpc == pytest.approx(2.0) and result.perplexity == pytest.approx(4.0)
    assert EvalResult(loss=1e6, chars=1).perplexity == math.exp(700.0)  # capped, not an overflow
    assert result.as_dict() == {"loss": math.log(4), "bpc": result.bpc, "perplexity": result.perplexity, "chars": 10}
