"""Incremental decoding for every architecture: causal decoders, prefix decoders (the
prompt is the prefix: read bidirectionally) and encoder-decoders (the prompt is the
encoder input; the decoder starts from the pad token, as in training).

Prompts of a batch are left-padded for decoders (padding is segment 0 and sees nothing of
the row) and right-padded for the encoder. With `use_cache` the keys and values of every
position are kept (`models/kv_cache.py`) and each step computes one position; without it
each step recomputes the whole sequence with the model's ordinary forward. Both give the
same tokens (tests/inference/test_generation.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from causeway.inference.rows import Rows
from causeway.inference.sampling import Sampling, next_tokens
from causeway.models.kv_cache import KVCache


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = 64
    sampling: Sampling = Sampling()
    stop_at: int | None = None  # a row ends after this token (EOS); None: never
    use_cache: bool = True


@torch.no_grad()
def generate(
    model: nn.Module, prompts: list[list[int]], how: Generation, pad_id: int
) -> list[list[int]]:
    """The new tokens of each prompt (ending with `stop_at` where it was produced)."""
    device = next(model.parameters()).device
    model.eval()
    if model.cfg.arch == "encoder_decoder":
        decode = EncoderDecoderSteps(model, Rows.of(prompts, pad_id, False, device), pad_id, how)
    else:
        decode = DecoderSteps(model, Rows.of(prompts, pad_id, True, device), how)
    generator = how.sampling.generator(device)
    produced = torch.empty(len(prompts), 0, dtype=torch.long, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    logits = decode.first()
    for _ in range(how.max_new_tokens):
        token = next_tokens(logits, how.sampling, generator)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        produced = torch.cat([produced, token[:, None]], dim=1)
        if how.stop_at is not None:
            done = done | (token == how.stop_at)
        if bool(done.all()) or produced.shape[1] == how.max_new_tokens:
            break
        logits = decode.next(produced)
    return [trim(row, how.stop_at) for row in produced.tolist()]


def trim(row: list[int], stop_at: int | None) -> list[int]:
    if stop_at is not None and stop_at in row:
        return row[: row.index(stop_at) + 1]
    return row


def capacity_check(model: nn.Module, length: int) -> None:
    if length > model.cfg.max_seq_len:
        raise ValueError(
            f"prompt plus --max-new-tokens is {length} positions; the model has "
            f"model.max_seq_len={model.cfg.max_seq_len}"
        )


class DecoderSteps:
    """Logits of the next position after the prompt and the tokens produced so far."""

    def __init__(self, model: nn.Module, rows: Rows, how: Generation) -> None:
        self.model, self.rows, self.how = model, rows, how
        width = rows.tokens.shape[1]
        capacity_check(model, int(rows.lengths.max()) + how.max_new_tokens)
        # Segment k's prefix length is entry k: padding (0) has none, the prompt is one.
        self.prefix_lengths = torch.stack([torch.zeros_like(rows.lengths), rows.lengths], 1)
        self.cache = None
        if how.use_cache:
            self.cache = KVCache.for_model(model, len(rows.tokens), width + how.max_new_tokens)

    def forward(self, tokens, segments, positions) -> torch.Tensor:
        logits = self.model(tokens, positions=positions, segment_ids=segments,
                            prefix_lengths=self.prefix_lengths, cache=self.cache)  # fmt: skip
        return logits[:, -1]

    def first(self) -> torch.Tensor:
        r = self.rows
        return self.forward(r.tokens, r.segments, r.positions)

    def next(self, produced: torch.Tensor) -> torch.Tensor:
        r, n = self.rows, produced.shape[1]
        new_positions = r.lengths[:, None] + torch.arange(n, device=produced.device)
        new_segments = torch.ones_like(produced, dtype=torch.int32)
        if self.cache is not None:
            return self.forward(produced[:, -1:], new_segments[:, -1:], new_positions[:, -1:])
        return self.forward(torch.cat([r.tokens, produced], 1),
                            torch.cat([r.segments, new_segments], 1),
                            torch.cat([r.positions, new_positions], 1))  # fmt: skip


class EncoderDecoderSteps:
    """The encoder reads the prompts once; the decoder starts from `start_id`."""

    def __init__(self, model: nn.Module, rows: Rows, start_id: int, how: Generation) -> None:
        self.model, self.rows, self.start_id = model, rows, start_id
        capacity_check(model, max(rows.tokens.shape[1], how.max_new_tokens + 1))
        self.memory = model.encode(rows.tokens, rows.positions, rows.segments)
        self.cache = None
        if how.use_cache:
            self.cache = KVCache.for_model(model, len(rows.tokens), how.max_new_tokens + 1)

    def forward(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        positions = positions.expand_as(tokens)
        segments = torch.ones_like(tokens, dtype=torch.int32)
        logits = self.model.decode(self.memory, tokens, positions, self.rows.segments, segments,
                                   cache=self.cache)  # fmt: skip
        return logits[:, -1]

    def first(self) -> torch.Tensor:
        start = torch.full((self.rows.tokens.shape[0], 1), self.start_id,
                           device=self.rows.tokens.device)  # fmt: skip
        self.start = start
        return self.forward(start, 0)

    def next(self, produced: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            return self.forward(produced[:, -1:], produced.shape[1])
        return self.forward(torch.cat([self.start, produced], 1), 0)
