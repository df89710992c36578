"""flash-attn path (GPU only; the `gpu` extra). Imported lazily and guarded.

Packed rows are flattened into variable-length sequences (one per document, padding
runs included as their own sequences) for `flash_attn_varlen_func`:

- causal: one call with `causal=True`.
- bidirectional / cross: one call with `causal=False`.
- prefix: two calls per batch. Prefix queries attend non-causally to the prefix keys of
  their document; target queries attend causally to all keys of their document, which
  flash-attn aligns bottom-right, so target i sees the prefix and targets up to i.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from causeway.models.masks import MaskInputs


def available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def cu_seqlens(lengths: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    out[1:] = torch.cumsum(lengths, 0)
    return out


def runs(segments: torch.Tensor) -> torch.Tensor:
    """Lengths of the runs of equal segment ids in the flattened [B, T] tensor."""
    batch, length = segments.shape
    flat = segments.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1]
    starts[::length] = True  # every row starts a new run
    idx = torch.nonzero(starts).squeeze(1)
    ends = torch.cat([idx[1:], idx.new_tensor([flat.numel()])])
    return ends - idx


def paired_counts(spec: MaskInputs, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention: query and key sequences numbered by the same (row, segment) slots.

    flash-attn pairs query sequence i with key sequence i, so both sides list documents
    1..n then padding for every row, with empty sequences where a side lacks one.
    """
    n_seg = int(max(spec.q_segments.max(), spec.k_segments.max())) + 1
    rows = n_seg * torch.arange(spec.batch, device=device)[:, None]

    def counts(seg: torch.Tensor) -> torch.Tensor:
        slot = torch.where(seg == 0, n_seg - 1, seg.long() - 1)
        return torch.bincount((slot + rows).reshape(-1), minlength=spec.batch * n_seg)

    return counts(spec.q_segments), counts(spec.k_segments)


@dataclass
class FlashLayout:
    kind: str
    q_cu: torch.Tensor
    k_cu: torch.Tensor
    q_max: int
    k_max: int
    # prefix kind: indices of prefix / target queries and their sequence boundaries
    prefix_index: torch.Tensor | None = None
    prefix_cu: torch.Tensor | None = None
    prefix_max: int = 0
    target_index: torch.Tensor | None = None
    target_cu: torch.Tensor | None = None
    target_max: int = 0

    @classmethod
    def build(cls, spec: MaskInputs, device: torch.device) -> FlashLayout:
        def seg_or_ones(seg, length):
            if seg is not None:
                return seg
            return torch.ones(spec.batch, length, dtype=torch.int32, device=device)

        if spec.kind == "cross" and spec.q_segments is not None:
            q_len, k_len = paired_counts(spec, device)
        else:
            q_len = runs(seg_or_ones(spec.q_segments, spec.q_len))
            k_len = runs(seg_or_ones(spec.k_segments, spec.k_len))
        layout = cls(spec.kind, cu_seqlens(q_len), cu_seqlens(k_len), int(q_len.max()), 0)
        layout.k_max = int(k_len.max())
        if spec.kind == "prefix":
            layout.add_prefix_split(spec.q_prefix.reshape(-1), layout.q_cu)
        return layout

    def add_prefix_split(self, flags: torch.Tensor, cu: torch.Tensor) -> None:
        token = torch.arange(flags.numel(), device=flags.device)
        doc_of = torch.bucketize(token, cu[1:], right=True)
        n_docs = cu.numel() - 1
        p_len = torch.zeros(n_docs, dtype=torch.int32, device=flags.device)
        p_len.scatter_add_(0, doc_of, flags.int())
        t_len = (cu[1:] - cu[:-1]) - p_len
        self.prefix_index = torch.nonzero(flags).squeeze(1)
        self.target_index = torch.nonzero(~flags).squeeze(1)
        self.prefix_cu, self.target_cu = cu_seqlens(p_len), cu_seqlens(t_len)
        self.prefix_max, self.target_max = int(p_len.max()), int(t_len.max())
        self.prefix_lengths = p_len


def attend(q, k, v, layout: FlashLayout, dropout: float) -> torch.Tensor:
    """q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D] -> [B, H, Tq, D]."""
    from flash_attn import flash_attn_varlen_func

    batch, heads, q_len, dim = q.shape
    qf = q.transpose(1, 2).reshape(-1, heads, dim)
    kf = k.transpose(1, 2).reshape(-1, k.shape[1], dim)
    vf = v.transpose(1, 2).reshape(-1, v.shape[1], dim)
    if layout.kind != "prefix":
        out = flash_attn_varlen_func(
            qf, kf, vf, layout.q_cu, layout.k_cu, layout.q_max, layout.k_max,
            dropout_p=dropout, causal=layout.kind == "causal",
        )  # fmt: skip
    else:
        out = prefix_attend(qf, kf, vf, layout, dropout)
    return out.reshape(batch, q_len, heads, dim).transpose(1, 2)


def prefix_attend(qf, kf, vf, layout: FlashLayout, dropout: float) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    out = torch.empty_like(qf)
    pi, ti = layout.prefix_index, layout.target_index
    if pi.numel():
        out[pi] = flash_attn_varlen_func(
            qf[pi], kf[pi], vf[pi], layout.prefix_cu, layout.prefix_cu,
            layout.prefix_max, layout.prefix_max, dropout_p=dropout, causal=False,
        )  # fmt: skip
    if ti.numel():
        out[ti] = flash_attn_varlen_func(
            qf[ti], kf, vf, layout.target_cu, layout.q_cu,
            layout.target_max, layout.q_max, dropout_p=dropout, causal=True,
        )  # fmt: skip
    return out
