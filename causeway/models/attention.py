"""Attention backends behind one function, and the attention module itself.

`AttentionMask` is built once per forward from the batch (see `masks.py`) and shared by
every layer, so a dense or block mask is made once, not once per layer.

Backends:
- sdpa: `scaled_dot_product_attention` with a boolean mask, or `is_causal=True` (the
  fast path) when the batch is causal and unpacked.
- flex: FlexAttention with a block mask built from the same rule. On CPU, PyTorch runs
  FlexAttention forward only (no backward), so it serves evaluation there.
- flash: flash-attn varlen kernels (GPU only, see `flash.py`).
- auto: flash when importable and on CUDA, else sdpa.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from causeway.models import flash
from causeway.models.masks import MaskInputs, dense_mask, mask_mod_for

if TYPE_CHECKING:
    from causeway.models.kv_cache import KVSlot

BACKENDS = ("auto", "sdpa", "flex", "flash")


def resolve_backend(name: str, device: torch.device) -> str:
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "flash" if device.type == "cuda" and flash.available() else "sdpa"
    if name == "flash" and not (device.type == "cuda" and flash.available()):
        raise RuntimeError("attention 'flash' needs flash-attn and a CUDA device")
    return name


class AttentionMask:
    """One mask, rendered lazily for whichever backend the layers use."""

    def __init__(self, spec: MaskInputs, backend: str, device: torch.device):
        self.spec = spec
        # New queries against cached keys (generation) are rendered densely, for SDPA.
        self.backend = "sdpa" if spec.incremental else resolve_backend(backend, device)
        self.device = device
        self._rendered = None

    def rendered(self):
        if self._rendered is None:
            self._rendered = self._render()
        return self._rendered

    def _render(self):
        spec = self.spec
        if self.backend == "sdpa":
            return None if spec.trivially_causal else dense_mask(spec, self.device)
        if self.backend == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            batch = None if spec.unmasked or spec.trivially_causal else spec.batch
            return create_block_mask(
                mask_mod_for(spec), batch, None, spec.q_len, spec.k_len, device=self.device
            )
        return flash.FlashLayout.build(spec, self.device)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, dropout: float
) -> torch.Tensor:
    """q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D] -> [B, H, Tq, D]."""
    rendered = mask.rendered()
    if mask.backend == "flash":
        return flash.attend(q, k, v, rendered, dropout)
    gqa = q.shape[1] != k.shape[1]
    if mask.backend == "flex":
        return flex_kernel(q.is_cuda)(q, k, v, block_mask=rendered, enable_gqa=gqa)
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=rendered,
        dropout_p=dropout,
        is_causal=mask.spec.trivially_causal,
        enable_gqa=gqa,
    )


@functools.cache
def flex_kernel(compiled: bool):
    """FlexAttention is fast only compiled (GPU); eager it serves CPU evaluation."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if compiled else flex_attention


class Attention(nn.Module):
    """Multi-head attention with grouped-query K/V and rotary positions."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int, dropout=0.0):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.dropout = dropout
        self.wq = nn.Linear(d_model, n_heads * head_dim, bias=False)
        self.wk = nn.Linear(d_model, n_kv_heads * head_dim, bias=False)
        self.wv = nn.Linear(d_model, n_kv_heads * head_dim, bias=False)
        self.wo = nn.Linear(n_heads * head_dim, d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        mask: AttentionMask,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        memory: torch.Tensor | None = None,
        cache: KVSlot | None = None,
    ) -> torch.Tensor:
        """Self-attention over `x`, or cross-attention to `memory` (no RoPE then).

        With `cache` (generation, `kv_cache.py`), x holds only the new tokens: their keys
        and values are appended to the cached ones and the queries attend to all of them;
        cross-attention projects `memory` once, at the first call."""
        batch, q_len, _ = x.shape
        # Heads are read with -1 so that tensor parallelism can shard them later.
        q = self.wq(x).view(batch, q_len, -1, self.head_dim)
        if rope is not None:
            q = apply_rope(q, *rope)
        if cache is not None and cache.fixed:  # cross-attention after the first step
            k, v = cache.keys_values()
        else:
            k, v = self.keys_values(x if memory is None else memory, rope)
            if cache is not None:
                k, v = cache.append(k, v)
        dropout = self.dropout if self.training else 0.0
        out = attend(q.transpose(1, 2), k, v, mask, dropout)
        return self.wo(out.transpose(1, 2).reshape(batch, q_len, -1))

    def keys_values(self, source: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, Hkv, T, D] keys (rotated when `rope`) and values of `source`."""
        batch, length, _ = source.shape
        k = self.wk(source).view(batch, length, -1, self.head_dim)
        v = self.wv(source).view(batch, length, -1, self.head_dim)
        if rope is not None:
            k = apply_rope(k, *rope)
        return k.transpose(1, 2), v.transpose(1, 2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :D/2], x[..., D/2:]); cos/sin: [B, T, 1, D/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
