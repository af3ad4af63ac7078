"""Text generation: one recurrent step per character, the prime read once, never re-run."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlm.data import Vocab
from charlm.model import CharRNN


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


def start_tokens(vocab: Vocab, prime: str) -> list[int]:
    """Token ids to feed first. An empty prime starts as if after a newline (or a space)."""
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
    logits = logits[:, -1]
    for step in range(length):
        if greedy:
            next_ids = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
            next_ids = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        yield next_ids.cpu()
        if step + 1 < length:
            logits, state = model(next_ids[:, None], state, direction=direction)
            logits = logits[:, -1]


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
