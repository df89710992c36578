"""Who may attend to whom: one rule, rendered for each attention backend.

Packed rows carry per-token `segment_ids` (documents numbered 1, 2, ...; 0 = padding),
per-token `positions` (restarting at 0 in each document) and per-segment
`prefix_lengths` ([B, S]; entry k is the prefix length of segment k, entry 0 belongs to
padding; an unpacked row is segment 1, so it needs S >= 2). A query at index t
may see a key at index s of the same row iff they are in the same segment and

- causal:        s <= t
- prefix:        s <= t, or both t and s lie in their document's prefix
- bidirectional: always
- cross (encoder-decoder): always (same segment on the encoder and decoder side)

Padding queries (segment 0) see every key of the row in cross-attention so that no
softmax row is empty; their outputs never reach the loss.

Incremental decoding (`kv_cache.py`) asks the same rule for the new queries only: they
are the indices q_offset .. q_offset + q_len - 1 of the row, and the keys are the whole
row so far (k_len = q_offset + q_len), with their own segment ids and prefix flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

VISIBILITIES = ("causal", "prefix", "bidirectional")


def in_prefix(
    positions: torch.Tensor, segment_ids: torch.Tensor, prefix_lengths: torch.Tensor
) -> torch.Tensor:
    """Per-token flag: does this token lie in its document's input prefix?"""
    per_token = prefix_lengths.gather(1, segment_ids.long())
    return positions < per_token


@dataclass
class MaskInputs:
    """What the mask rule needs for one attention call; None fields mean 'not packed'."""

    kind: str  # "causal" | "prefix" | "bidirectional" | "cross"
    batch: int
    q_len: int
    k_len: int
    q_segments: torch.Tensor | None = None
    k_segments: torch.Tensor | None = None
    q_prefix: torch.Tensor | None = None  # per-token in_prefix flags (prefix kind only)
    k_prefix: torch.Tensor | None = None  # the keys' flags; None: the queries' (no cache)
    q_offset: int = 0  # index of the first query in the row (incremental decoding)

    @property
    def trivially_causal(self) -> bool:
        return self.kind == "causal" and self.q_segments is None and self.q_offset == 0

    @property
    def incremental(self) -> bool:
        """Queries that are the tail of the keys: only the dense (SDPA) mask renders it."""
        return self.q_offset > 0 or self.k_prefix is not None

    @property
    def unmasked(self) -> bool:
        return self.kind in ("bidirectional", "cross") and self.q_segments is None


def dense_mask(spec: MaskInputs, device: torch.device) -> torch.Tensor | None:
    """Boolean [B or 1, 1, Tq, Tk] mask for SDPA (True = may attend); None = no mask."""
    if spec.unmasked:
        return None
    q_idx = torch.arange(spec.q_offset, spec.q_offset + spec.q_len, device=device)
    k_idx = torch.arange(spec.k_len, device=device)
    allowed = torch.ones(1, spec.q_len, spec.k_len, dtype=torch.bool, device=device)
    if spec.kind in ("causal", "prefix"):
        causal = k_idx[None, :] <= q_idx[:, None]
        if spec.kind == "prefix":
            k_prefix = spec.q_prefix if spec.k_prefix is None else spec.k_prefix
            both = spec.q_prefix[:, :, None] & k_prefix[:, None, :]
            causal = causal[None] | both
        allowed = allowed & causal
    if spec.q_segments is not None:
        same = spec.q_segments[:, :, None] == spec.k_segments[:, None, :]
        if spec.kind == "cross":
            same = same | (spec.q_segments == 0)[:, :, None]
        allowed = allowed & same
    return allowed[:, None]


def mask_mod_for(spec: MaskInputs):
    """The same rule as a FlexAttention `mask_mod(b, h, q_idx, kv_idx)`."""
    q_seg, k_seg, prefix, kind = spec.q_segments, spec.k_segments, spec.q_prefix, spec.kind

    def mask_mod(b, h, q_idx, kv_idx):
        if kind == "causal":
            allowed = kv_idx <= q_idx
        elif kind == "prefix":
            allowed = (kv_idx <= q_idx) | (prefix[b, q_idx] & prefix[b, kv_idx])
        else:
            allowed = q_idx >= 0  # all-true of the right shape
        if q_seg is not None:
            same = q_seg[b, q_idx] == k_seg[b, kv_idx]
            if kind == "cross":
                same = same | (q_seg[b, q_idx] == 0)
            allowed = allowed & same
        return allowed

    return mask_mod


def self_attention_spec(
    visibility: str,
    seq_len: int,
    segment_ids: torch.Tensor | None,
    positions: torch.Tensor | None,
    prefix_lengths: torch.Tensor | None,
) -> MaskInputs:
    """Mask inputs for a self-attention stack with the given visibility."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {VISIBILITIES}, got {visibility!r}")
    prefix = None
    if visibility == "prefix":
        if prefix_lengths is None:
            raise ValueError("prefix visibility needs prefix_lengths in the batch")
        if segment_ids is None:
            segment_ids = torch.ones_like(positions, dtype=torch.int32)
        prefix = in_prefix(positions, segment_ids, prefix_lengths)
    batch = positions.shape[0]
    return MaskInputs(visibility, batch, seq_len, seq_len, segment_ids, segment_ids, prefix)
