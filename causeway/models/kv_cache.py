"""Keys and values of the tokens already read, so that generation computes each token once.

A `KVCache` holds, per layer, the rotated keys and the values of every position written so
far ([B, Hkv, capacity, D], allocated once), with each position's segment id and prefix
flag, which the mask of later queries needs (`masks.py`: q_offset, k_prefix). The models
take it as `cache=`: they read `slot(i)` for layer i, attend over the cached positions
plus the new ones, and call `advance(n)` once all layers have written their n new
positions. Cross-attention to an encoder's output is projected once and kept
(`cross_slot(i)`).

Without a cache the models recompute every position: the same function of the same
tokens (tests/models/test_kv_cache.py compares both token for token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from causeway.models.masks import MaskInputs


class KVSlot(Protocol):
    """One layer's view of the cache for one forward (what `Attention` takes as cache)."""

    @property
    def fixed(self) -> bool:
        """Whether the keys and values are already there (cross-attention after step 1)."""
        ...

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values; returns those of every position."""
        ...

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class SelfSlot:
    """Self-attention: the new positions are written at `start`."""

    keys: torch.Tensor
    values: torch.Tensor
    start: int
    fixed: bool = False

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.start + k.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"the KV cache holds {self.keys.shape[2]} positions, {end} asked")
        self.keys[:, :, self.start : end] = k
        self.values[:, :, self.start : end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[:, :, : self.start], self.values[:, :, : self.start]


@dataclass
class CrossSlot:
    """Cross-attention: the encoder output's keys and values, kept from the first call."""

    store: dict[int, tuple[torch.Tensor, torch.Tensor]]
    layer: int

    @property
    def fixed(self) -> bool:
        return self.layer in self.store

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.store[self.layer] = (k, v)
        return k, v

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.store[self.layer]


@dataclass
class KVCache:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    segments: torch.Tensor  # [B, capacity] segment id of each written position (0: padding)
    prefix: torch.Tensor  # [B, capacity] bool: the position lies in its row's prefix
    length: int = 0  # positions written
    cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @classmethod
    def for_model(cls, model: nn.Module, batch: int, capacity: int) -> KVCache:
        """Room for `capacity` positions of `batch` rows in every (decoder) layer of
        `model`, in its dtype and on its device."""
        cfg, weight = model.cfg, model.embed.weight
        device = weight.device
        shape = (batch, cfg.kv_heads, capacity, cfg.dim_per_head)
        keys = [torch.zeros(shape, dtype=weight.dtype, device=device) for _ in range(cfg.n_layers)]
        values = [torch.zeros_like(k) for k in keys]
        segments = torch.zeros(batch, capacity, dtype=torch.int32, device=device)
        prefix = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        return cls(keys, values, segments, prefix)

    @property
    def capacity(self) -> int:
        return self.segments.shape[1]

    def slot(self, layer: int) -> SelfSlot:
        return SelfSlot(self.keys[layer], self.values[layer], self.length)

    def cross_slot(self, layer: int) -> CrossSlot:
        return CrossSlot(self.cross, layer)

    def self_attention_spec(
        self, kind: str, segments: torch.Tensor, prefix: torch.Tensor | None
    ) -> MaskInputs:
        """The mask of the new positions (their segment ids and, for prefix visibility,
        prefix flags) over every position so far; records them for later queries."""
        start, end = self.length, self.length + segments.shape[1]
        if end > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions, {end} asked")
        self.segments[:, start:end] = segments
        if prefix is not None:
            self.prefix[:, start:end] = prefix
        k_prefix = self.prefix[:, :end] if prefix is not None else None
        batch, q_len = segments.shape
        return MaskInputs(kind, batch, q_len, end, segments, self.segments[:, :end], prefix,
                          k_prefix, q_offset=start)  # fmt: skip

    def cross_attention_spec(
        self, dec_segments: torch.Tensor, enc_segments: torch.Tensor
    ) -> MaskInputs:
        batch, q_len = dec_segments.shape
        return MaskInputs("cross", batch, q_len, enc_segments.shape[1], dec_segments,
                          enc_segments, q_offset=self.length)  # fmt: skip

    def advance(self, n: int) -> None:
        self.length += n
