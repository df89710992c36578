"""A decoder-only transformer whose attention is causal, prefix or bidirectional.

Plain single-device PyTorch: no collectives. Layers live in a ModuleDict keyed by their
index so that pipeline stages can drop the ones they do not own and checkpoints keep
the single-device names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from causeway.config.schema import ModelConfig
from causeway.models.attention import AttentionMask
from causeway.models.layers import Block, RMSNorm, RotaryTable, depth_scaled_std
from causeway.models.loss import LossSums, linear_loss_sums
from causeway.models.masks import self_attention_spec


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.visibility = cfg.visibility or "causal"
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rope = RotaryTable(cfg.dim_per_head, cfg.max_seq_len, cfg.rope_theta)
        self.layers = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, False)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        z_weight: float = 0.0,
    ) -> torch.Tensor | LossSums:
        """tokens [B, T] -> logits [B, T, V]; or, given targets, the loss sums.

        See `masks.py` for the packing inputs. With targets the output projection and
        the loss are fused (`linear_loss_sums`), so [B, T, V] logits never exist.
        """
        h = self.embed(tokens)
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        spec = self_attention_spec(
            self.visibility, tokens.shape[1], segment_ids, positions, prefix_lengths
        )
        mask = AttentionMask(spec, self.cfg.attention, tokens.device)
        rope = self.rope(positions, h.dtype)
        for layer in self.layers.values():
            h = layer(h, mask, rope)
        h = self.norm(h)
        if targets is None:
            return F.linear(h, self.output_weight)
        return linear_loss_sums(h, self.output_weight, targets, loss_mask, z_weight)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.embed.weight if self.output is None else self.output.weight

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every parameter; called after materialising from the meta device."""
        std = self.cfg.init_std
        nn.init.normal_(self.embed.weight, std=std)
        out_std = depth_scaled_std(std, len(self.layers))
        for layer in self.layers.values():
            layer.init_weights(std, out_std)
        self.norm.reset_parameters()
        self.rope.reset_parameters()
        if self.output is not None:
            nn.init.normal_(self.output.weight, std=std)
