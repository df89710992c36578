"""The next token from the last position's logits: greedy, or sampled with temperature,
top-k and top-p (nucleus), from a seeded generator so that a seed gives the same text."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy (the most likely token)
    top_k: int = 0  # 0: no cut
    top_p: float = 1.0  # 1: no cut
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")

    def generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)


def next_tokens(logits: torch.Tensor, how: Sampling, generator: torch.Generator) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if how.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / how.temperature
    if how.top_k:
        kth = logits.topk(min(how.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if how.top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        mass = ordered.softmax(dim=-1).cumsum(dim=-1)
        # Keep the smallest set whose mass reaches top_p: drop a token when the mass before
        # it already does (the most likely token always stays).
        drop = (mass - ordered.softmax(dim=-1)) >= how.top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
