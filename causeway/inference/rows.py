"""Token lists laid out as a padded batch: tokens, segment ids (1: the row's tokens, 0:
padding, which the masks keep apart) and positions restarting at 0 in each row."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rows:
    """A batch of prompts laid out for the model: tokens [B, T], segment ids (0: padding)
    and positions."""

    tokens: torch.Tensor
    segments: torch.Tensor
    positions: torch.Tensor
    lengths: torch.Tensor  # [B] prompt lengths

    @classmethod
    def of(cls, prompts: list[list[int]], pad_id: int, left: bool, device) -> Rows:
        """Left-padded (decoder prompts: the next position is the last column of every row)
        or right-padded."""
        if not prompts or any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        width = max(len(p) for p in prompts)
        tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        segments = torch.zeros(len(prompts), width, dtype=torch.int32)
        positions = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            at = slice(width - len(prompt), width) if left else slice(0, len(prompt))
            tokens[row, at] = torch.tensor(prompt)
            segments[row, at] = 1
            positions[row, at] = torch.arange(len(prompt))
        lengths = torch.tensor([len(p) for p in prompts])
        return cls(*(t.to(device) for t in (tokens, segments, positions, lengths)))
