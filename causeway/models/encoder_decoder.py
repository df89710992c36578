"""An encoder-decoder: bidirectional encoder, causal decoder with cross-attention.

Encoder and decoder share one embedding (and, when tied, the output projection), as in
T5 and the paper's ED models. Packed rows match on segment ids: a decoder token attends
only to encoder tokens of the same document.
"""

from __future__ import annotations

import torch
from torch import nn

from causeway.config.schema import ModelConfig
from causeway.models.attention import AttentionMask
from causeway.models.head import HeadMixin, OutputHead
from causeway.models.init import Init, init_parameters, transformer_init
from causeway.models.kv_cache import KVCache
from causeway.models.layers import Block, RMSNorm, RotaryTable
from causeway.models.loss import LossSums
from causeway.models.masks import MaskInputs, self_attention_spec


def default_positions(tokens: torch.Tensor) -> torch.Tensor:
    return torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)


class EncoderDecoder(HeadMixin, nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rope = RotaryTable(cfg.dim_per_head, cfg.max_seq_len, cfg.rope_theta)
        n_enc = cfg.encoder_layers
        self.encoder_layers = nn.ModuleDict({str(i): Block(cfg) for i in range(n_enc)})
        self.encoder_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.layers = nn.ModuleDict({str(i): Block(cfg, cross=True) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, False)
        self.set_head(OutputHead())  # models/head.py

    def encode(self, enc_tokens, enc_positions=None, enc_segment_ids=None) -> torch.Tensor:
        if enc_positions is None:
            enc_positions = default_positions(enc_tokens)
        spec = self_attention_spec(
            "bidirectional", enc_tokens.shape[1], enc_segment_ids, enc_positions, None
        )
        mask = AttentionMask(spec, self.cfg.attention, enc_tokens.device)
        h = self.embed(enc_tokens)
        rope = self.rope(enc_positions, h.dtype)
        for layer in self.encoder_layers.values():
            h = layer(h, mask, rope)
        return self.encoder_norm(h)

    def forward(
        self,
        enc_tokens: torch.Tensor,
        dec_tokens: torch.Tensor,
        enc_positions: torch.Tensor | None = None,
        dec_positions: torch.Tensor | None = None,
        enc_segment_ids: torch.Tensor | None = None,
        dec_segment_ids: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        z_weight: float = 0.0,
    ) -> torch.Tensor | LossSums:
        """-> logits [B, T_dec, V]; or, given targets, the loss sums (as `Decoder`)."""
        if (enc_segment_ids is None) != (dec_segment_ids is None):
            raise ValueError("give both enc_segment_ids and dec_segment_ids, or neither")
        memory = self.encode(enc_tokens, enc_positions, enc_segment_ids)
        return self.decode(memory, dec_tokens, dec_positions, enc_segment_ids, dec_segment_ids,
                           targets, loss_mask, z_weight)  # fmt: skip

    def decode(
        self,
        memory: torch.Tensor,
        dec_tokens: torch.Tensor,
        dec_positions: torch.Tensor | None = None,
        enc_segment_ids: torch.Tensor | None = None,
        dec_segment_ids: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        z_weight: float = 0.0,
        cache: KVCache | None = None,
    ) -> torch.Tensor | LossSums:
        """The decoder over `memory` (`encode`'s output). With `cache` (generation) the
        tokens follow the cached ones; give their positions and both segment ids."""
        if dec_positions is None:
            dec_positions = default_positions(dec_tokens)
        batch, dec_len = dec_tokens.shape
        if cache is None:
            self_spec = self_attention_spec("causal", dec_len, dec_segment_ids, dec_positions,
                                            None)  # fmt: skip
            cross_spec = MaskInputs(
                "cross", batch, dec_len, memory.shape[1], dec_segment_ids, enc_segment_ids
            )
        else:
            self_spec = cache.self_attention_spec("causal", dec_segment_ids, None)
            cross_spec = cache.cross_attention_spec(dec_segment_ids, enc_segment_ids)
        self_mask = AttentionMask(self_spec, self.cfg.attention, dec_tokens.device)
        cross_mask = AttentionMask(cross_spec, self.cfg.attention, dec_tokens.device)
        h = self.embed(dec_tokens)
        rope = self.rope(dec_positions, h.dtype)
        for name, layer in self.layers.items():
            slots = {}
            if cache is not None:
                slots = {"cache": cache.slot(int(name)), "cross_cache": cache.cross_slot(int(name))}
            h = layer(h, self_mask, rope, memory=memory, cross_mask=cross_mask, **slots)
        if cache is not None:
            cache.advance(dec_len)
        return self.head(self.norm(h), self.output_weight, targets, loss_mask, z_weight)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.embed.weight if self.output is None else self.output.weight

    def init_weights(self, seed: int = 0) -> None:
        """Every parameter from `seed` and its name (models/init.py); the output
        projections are scaled by the depth of their own stack."""
        std, cfg = self.cfg.init_std, self.cfg

        def rule(name: str) -> Init:
            depth = cfg.encoder_layers if name.startswith("encoder_layers.") else cfg.n_layers
            return transformer_init(name, std, depth)

        init_parameters(self, seed, rule)
        self.rope.reset_parameters()
