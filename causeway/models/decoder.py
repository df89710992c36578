"""A decoder-only transformer whose attention is causal, prefix or bidirectional.

Plain single-device PyTorch: no collectives. Layers live in a ModuleDict keyed by their
index so that pipeline stages can drop the ones they do not own and checkpoints keep
the single-device names. A pipeline stage is this same class with `embed` unused as
input (it takes hidden states) and/or `norm` removed (it returns hidden states).
"""

from __future__ import annotations

import torch
from torch import nn

from causeway.config.schema import ModelConfig
from causeway.models.attention import AttentionMask
from causeway.models.head import HeadMixin, OutputHead
from causeway.models.init import init_parameters, transformer_init
from causeway.models.kv_cache import KVCache
from causeway.models.layers import Block, RMSNorm, RotaryTable
from causeway.models.loss import LossSums
from causeway.models.masks import MaskInputs, in_prefix, self_attention_spec


def default_positions(tokens: torch.Tensor) -> torch.Tensor:
    batch, length = tokens.shape[:2]
    return torch.arange(length, device=tokens.device).expand(batch, length)


def cached_spec(visibility, cache: KVCache, positions, segment_ids, prefix_lengths) -> MaskInputs:
    """The mask of new positions over the cached ones (the same rule as without a cache)."""
    if segment_ids is None:
        segment_ids = torch.ones_like(positions, dtype=torch.int32)
    prefix = None
    if visibility == "prefix":
        prefix = in_prefix(positions, segment_ids, prefix_lengths)
    return cache.self_attention_spec(visibility, segment_ids, prefix)


class Decoder(HeadMixin, nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.visibility = cfg.visibility or "causal"
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rope = RotaryTable(cfg.dim_per_head, cfg.max_seq_len, cfg.rope_theta)
        self.layers = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, False)
        self.set_head(OutputHead())  # models/head.py: no parameters, no state-dict keys
        self.takes_tokens = True  # False for pipeline stages after the first

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        z_weight: float = 0.0,
        cache: KVCache | None = None,
    ) -> torch.Tensor | LossSums:
        """tokens [B, T] -> logits [B, T, V]; or, given targets, the loss sums.

        See `masks.py` for the packing inputs. With targets the output projection and
        the loss are fused (`linear_loss_sums`), so [B, T, V] logits never exist. With
        `cache` (generation, `kv_cache.py`) tokens are the positions after the cached
        ones: give their `positions` and `segment_ids`.
        """
        h = self.embed(tokens) if self.takes_tokens else tokens
        if positions is None:
            positions = default_positions(tokens)
        if cache is None:
            # The full length comes from positions: under sequence parallelism h is a shard.
            spec = self_attention_spec(
                self.visibility, positions.shape[1], segment_ids, positions, prefix_lengths
            )
        else:
            spec = cached_spec(self.visibility, cache, positions, segment_ids, prefix_lengths)
        mask = AttentionMask(spec, self.cfg.attention, h.device)
        rope = self.rope(positions, h.dtype)
        for name, layer in self.layers.items():
            h = layer(h, mask, rope, cache=None if cache is None else cache.slot(int(name)))
        if cache is not None:
            cache.advance(tokens.shape[1])
        if self.norm is None:
            return h
        return self.head(self.norm(h), self.output_weight, targets, loss_mask, z_weight)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.embed.weight if self.output is None else self.output.weight

    def init_weights(self, seed: int = 0) -> None:
        """Initialise every parameter present from `seed` and its name (models/init.py);
        called after materialising from meta. A pipeline stage or a shard draws what the
        whole model would, and keeps its piece."""
        std, depth = self.cfg.init_std, self.cfg.n_layers
        init_parameters(self, seed, lambda name: transformer_init(name, std, depth))
        self.rope.reset_parameters()
