"""Text generation: the prime read once by the fused kernel, then one hand-written step per character
(``charlm.step.FastStep``), never re-running what was already read."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlm.data import Vocab
from charlm.model import CharRNN
from charlm.step import FastStep


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Scale by temperature, then keep the top-k and the nucleus of mass top_p (others -inf)."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p; the first always stays.
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of ``logits`` (batch, vocab), drawn from their softmax.

    Inverse-CDF sampling: a uniform number placed in the cumulative distribution. It is a
    third of ``torch.multinomial``'s cost at one stream, where each microsecond counts; the sums
    are in float64 so that a token of probability zero (filtered out) can never be drawn.
    """
    cdf = torch.softmax(logits.cpu(), dim=-1, dtype=torch.float64).cumsum_(dim=-1)
    uniform = torch.rand((logits.shape[0], 1), generator=generator, dtype=torch.float64)
    ids = torch.searchsorted(cdf, uniform.mul_(cdf[:, -1:]), right=True).squeeze_(1)
    return ids.clamp_(max=logits.shape[-1] - 1)


def start_tokens(vocab: Vocab, prime: str) -> list[int]:
    """Token ids to feed first. An empty prime starts as if after a newline (or a space); in lines
    mode every sample starts with the line marker, and the prime is the start of the line."""
    if vocab.marker is not None:
        return [vocab.marker] + [vocab.index[c] for c in prime]
    if prime:
        return [vocab.index[c] for c in prime]
    for fallback in ("\n", " "):
        if fallback in vocab.index:
            return [vocab.index[fallback]]
    return [0]


@torch.no_grad()
def generate(
    model: CharRNN,
    prime_ids: list[int],
    length: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    direction: str = "forward",
) -> Iterator[torch.Tensor]:
    """Yield ``length`` steps of token ids, each a (num_samples,) tensor on the CPU.

    The prime is read in one call; after that the state advances one character per step. With
    ``direction="backward"`` both the prime and the output are in right-to-left order.
    """
    model.eval()
    device = model.head.weight.device
    prime = torch.tensor(prime_ids, dtype=torch.long, device=device).expand(num_samples, -1)
    logits, state = model(prime, direction=direction)
    # Temperature is folded into the step's head (argmax is unchanged by it); top-k and top-p then
    # filter the already scaled logits.
    scale = 1.0 / temperature
    filtering = bool(top_k) or top_p < 1.0
    logits = logits[:, -1].float() * scale
    step_fn = FastStep(model, direction)
    step_state = step_fn.import_state(state)
    for step in range(length):
        if greedy:
            next_ids = logits.argmax(dim=-1)
        else:
            candidates = filter_logits(logits, 1.0, top_k, top_p) if filtering else logits
            next_ids = draw(candidates, generator).to(device)
        yield next_ids.cpu()
        if step + 1 < length:
            logits = step_fn(next_ids, step_state, scale)


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
