"""Test-side references: the visibility rule written as plain loops, packed batches built by
hand, and an attention / model forward computed without the library's attention code.

Everything here follows the rule in `causeway/models/masks.py`'s docstring, not its code.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch

from causeway.config.schema import ModelConfig
from causeway.models import build_model, materialize

SELF_KINDS = ("causal", "prefix", "bidirectional")


# ---------------------------------------------------------------------------------------
# Packed batches
# ---------------------------------------------------------------------------------------


def packed_row(lengths: list[int], width: int) -> tuple[list[int], list[int]]:
    """Segment ids (1-based, padding 0) and positions restarting at 0, as the packer does."""
    segments, positions = [], []
    for number, length in enumerate(lengths, start=1):
        segments += [number] * length
        positions += list(range(length))
    assert len(segments) <= width
    pad = width - len(segments)
    return segments + [0] * pad, positions + [0] * pad


def packed_batch(rows: list[list[int]], width: int, prefixes: list[list[int]] | None = None):
    """segment_ids, positions [B, T] and prefix_lengths [B, S] (entry 0 = padding = 0)."""
    seg, pos = zip(*(packed_row(lengths, width) for lengths in rows), strict=True)
    segment_ids = torch.tensor(seg, dtype=torch.int32)
    positions = torch.tensor(pos, dtype=torch.int64)
    if prefixes is None:
        return segment_ids, positions, None
    widest = max(len(p) for p in prefixes) + 1
    table = [[0] + p + [0] * (widest - 1 - len(p)) for p in prefixes]
    return segment_ids, positions, torch.tensor(table, dtype=torch.int64)


# Three rows of 16: prefixes of different lengths, including 0 and the whole document,
# rows with and without padding.
PACKED_ROWS = [[5, 4, 3], [7, 6], [9, 7]]
PACKED_PREFIXES = [[2, 0, 3], [7, 1], [4, 6]]
WIDTH = 16

# Encoder-decoder rows: the same documents on both sides, padded independently (a row may
# be padded on one side only).
ENC_ROWS, ENC_WIDTH = [[4, 3], [6, 4], [5]], 10
DEC_ROWS, DEC_WIDTH = [[2, 3], [3, 3], [7]], 7


def packed_decoder_batch():
    return packed_batch(PACKED_ROWS, WIDTH, PACKED_PREFIXES)


def unpacked_decoder_batch(batch: int = 2, width: int = 12, prefix: tuple[int, ...] = (5, 0)):
    """positions [B, T] and prefix_lengths [B, 2] (entry 1 = the row's one document)."""
    positions = torch.arange(width).expand(batch, width).clone()
    prefix_lengths = torch.tensor([[0, p] for p in prefix[:batch]], dtype=torch.int64)
    return positions, prefix_lengths


def packed_seq2seq_batch():
    enc_seg, enc_pos, _ = packed_batch(ENC_ROWS, ENC_WIDTH)
    dec_seg, dec_pos, _ = packed_batch(DEC_ROWS, DEC_WIDTH)
    return enc_seg, enc_pos, dec_seg, dec_pos


# ---------------------------------------------------------------------------------------
# The visibility rule, loop by loop
# ---------------------------------------------------------------------------------------


def reference_mask(
    kind: str,
    batch: int,
    q_len: int,
    k_len: int,
    q_segments: torch.Tensor | None = None,
    k_segments: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    prefix_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, Tq, Tk] booleans, True = query t may see key s.

    Unpacked (segments None): every token is in one document (segment 1); a prefix row then
    reads its prefix length from prefix_lengths[b, 1].
    """
    q_seg = [[1] * q_len] * batch if q_segments is None else q_segments.tolist()
    k_seg = [[1] * k_len] * batch if k_segments is None else k_segments.tolist()
    pos = None if positions is None else positions.tolist()
    plens = None if prefix_lengths is None else prefix_lengths.tolist()
    out = [[[False] * k_len for _ in range(q_len)] for _ in range(batch)]
    for b in range(batch):
        for t in range(q_len):
            for s in range(k_len):
                qs, ks = q_seg[b][t], k_seg[b][s]
                if kind == "cross":
                    out[b][t][s] = qs == ks or qs == 0
                    continue
                if qs != ks:
                    continue
                if kind == "causal":
                    out[b][t][s] = s <= t
                elif kind == "bidirectional":
                    out[b][t][s] = True
                elif kind == "prefix":
                    plen = plens[b][qs]
                    both_in_prefix = pos[b][t] < plen and pos[b][s] < plen
                    out[b][t][s] = s <= t or both_in_prefix
                else:
                    raise ValueError(kind)
    return torch.tensor(out, dtype=torch.bool)
    return out


# ---------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------


def tiny_config(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=64,
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_ff=64,
        max_seq_len=64,
        attention="sdpa",
        # Large weights make attention peaky, so that a wrong mask moves the logits a lot.
        init_std=0.3,
    )
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **overrides):
    cfg = tiny_config(**overrides)
    torch.manual_seed(seed)
    model = materialize(build_model(cfg, "cpu"), "cpu", seed=seed)
    return model.eval()


def with_backend(model, backend: str):
    """The same weights, another attention backend."""
    other = copy.deepcopy(model)
    other.cfg = dataclasses.replace(model.cfg, attention=backend)
    return other


# ---------------------------------------------------------------------------------------
# Reference forward passes (no library attention code)
# ---------------------------------------------------------------------------------------


def reference_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x [B, T, H, D]: rotate the pairs (x[..., i], x[..., i + D/2]) by position * freq_i."""
    dim = x.shape[-1]
    half = dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # [B, T, D/2]
    cos = angles.cos()[:, :, None, :].to(x.dtype)
    sin = angles.sin()[:, :, None, :].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def reference_attention(
    attn,
    x: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor | None,
    theta: float,
    memory: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V with an explicit boolean mask [B, Tq, Tk]; GQA by repeating
    each K/V head over its group of query heads."""
    batch, q_len, _ = x.shape
    source = x if memory is None else memory
    heads, kv_heads, dim = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ attn.wq.weight.T).view(batch, q_len, heads, dim)
    k = (source @ attn.wk.weight.T).view(batch, source.shape[1], kv_heads, dim)
    v = (source @ attn.wv.weight.T).view(batch, source.shape[1], kv_heads, dim)
    if positions is not None:
        q, k = reference_rope(q, positions, theta), reference_rope(k, positions, theta)
    k = k.repeat_interleave(heads // kv_heads, dim=2)
    v = v.repeat_interleave(heads // kv_heads, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(dim)
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhts,bshd->bthd", weights, v).reshape(batch, q_len, heads * dim)
    return out @ attn.wo.weight.T


def reference_block(layer, h, mask, positions, theta, memory=None, cross_mask=None):
    h = h + reference_attention(layer.attention, layer.attention_norm(h), mask, positions, theta)
    if memory is not None:
        h = h + reference_attention(
            layer.cross_attention, layer.cross_norm(h), cross_mask, None, theta, memory=memory
        )
    return h + layer.mlp(layer.mlp_norm(h))


def output_logits(model, h: torch.Tensor) -> torch.Tensor:
    weight = model.embed.weight if model.output is None else model.output.weight
    return model.norm(h) @ weight.T


def reference_decoder(model, tokens, mask, positions) -> torch.Tensor:
    theta = model.cfg.rope_theta
    h = model.embed.weight[tokens]
    for layer in model.layers.values():
        h = reference_block(layer, h, mask, positions, theta)
    return output_logits(model, h)


def reference_seq2seq(model, enc_tokens, dec_tokens, enc_pos, dec_pos, enc_seg, dec_seg):
    theta = model.cfg.rope_theta
    batch, enc_len = enc_tokens.shape
    dec_len = dec_tokens.shape[1]
    enc_mask = reference_mask("bidirectional", batch, enc_len, enc_len, enc_seg, enc_seg)
    dec_mask = reference_mask("causal", batch, dec_len, dec_len, dec_seg, dec_seg)
    cross = reference_mask("cross", batch, dec_len, enc_len, dec_seg, enc_seg)
    h = model.embed.weight[enc_tokens]
    for layer in model.encoder_layers.values():
        h = reference_block(layer, h, enc_mask, enc_pos, theta)
    memory = model.encoder_norm(h)
    h = model.embed.weight[dec_tokens]
    for layer in model.layers.values():
        h = reference_block(layer, h, dec_mask, dec_pos, theta, memory=memory, cross_mask=cross)
    return output_logits(model, h)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol=5e-5, rtol=5e-5) -> None:
    """fp32 logits of size ~3 summed in another order: 2 of 1344 entries of the GQA
    encoder-decoder differed by 3.5e-5 on a loaded CI machine (BLAS blocking varies)."""
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach())
