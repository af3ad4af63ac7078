"""Generated text of our own: for tests, benchmarks and demonstrations, never anyone's corpus."""

from __future__ import annotations

import random

WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "to", "dog", "house",
         "quickly", "over", "under", "green", "hill", "small", "bird", "sang")


def pseudo_english(chars: int = 20_000, seed: int = 0) -> str:
    """Sentences drawn from a small word list: learnable, and exactly ``chars`` characters long."""
    rng = random.Random(seed)
    out: list[str] = []
    length = 0
    while length < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        sentence = sentence.capitalize() + rng.choice([".", "!", "?"]) + rng.choice([" ", " ", "\n"])
        out.append(sentence)
        length += len(sentence)
    return "".join(out)[:chars]
