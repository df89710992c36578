"""Building blocks shared by the decoder and the encoder-decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from causeway.config.schema import ModelConfig
from causeway.models.attention import Attention, AttentionMask


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


class GatedMLP(nn.Module):
    """SwiGLU (silu gate) or GeGLU (gelu gate): w2(act(w1 x) * w3 x)."""

    def __init__(self, d_model: int, d_ff: int, kind: str):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.act = F.silu if kind == "swiglu" else lambda x: F.gelu(x, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class RotaryTable(nn.Module):
    """cos/sin of every position up to max_seq_len, looked up by per-token positions."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self.register_buffer("cos", torch.empty(max_seq_len, head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, head_dim // 2), persistent=False)

    def reset_parameters(self) -> None:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        inv_freq = 1.0 / (self.theta**exponent)
        angles = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float32), inv_freq)
        with torch.no_grad():
            self.cos.copy_(angles.cos())
            self.sin.copy_(angles.sin())

    def forward(self, positions: torch.Tensor, dtype: torch.dtype):
        """positions: [B, T] -> (cos, sin) each [B, T, 1, D/2]."""
        return self.cos[positions].unsqueeze(2).to(dtype), self.sin[positions].unsqueeze(2).to(
            dtype
        )


class Block(nn.Module):
    """Pre-norm transformer block; with `cross=True` it also attends to encoder memory."""

    def __init__(self, cfg: ModelConfig, cross: bool = False):
        super().__init__()
        args = (cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.dim_per_head, cfg.dropout)
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = Attention(*args)
        self.cross_norm = RMSNorm(cfg.d_model, cfg.norm_eps) if cross else None
        self.cross_attention = Attention(*args) if cross else None
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = GatedMLP(cfg.d_model, cfg.d_ff, cfg.mlp)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x, mask: AttentionMask, rope, memory=None, cross_mask=None, cache=None,
        cross_cache=None,
    ):  # fmt: skip
        """`cache`, `cross_cache`: this layer's `kv_cache` slots (generation), else None."""
        x = x + self.dropout(self.attention(self.attention_norm(x), mask, rope, cache=cache))
        if self.cross_attention is not None:
            h = self.cross_attention(
                self.cross_norm(x), cross_mask, None, memory=memory, cache=cross_cache
            )
            x = x + self.dropout(h)
        return x + self.dropout(self.mlp(self.mlp_norm(x)))
