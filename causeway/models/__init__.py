"""Plain single-device models; parallelism is applied afterwards by `causeway.parallel`."""

from __future__ import annotations

import torch
from torch import nn

from causeway.config.schema import ModelConfig
from causeway.models.decoder import Decoder
from causeway.models.encoder_decoder import EncoderDecoder

DECODER_KEYS = ("tokens", "positions", "segment_ids", "prefix_lengths")
SEQ2SEQ_KEYS = (
    "enc_tokens",
    "dec_tokens",
    "enc_positions",
    "dec_positions",
    "enc_segment_ids",
    "dec_segment_ids",
)


def build_model(cfg: ModelConfig, device: torch.device | str = "meta") -> nn.Module:
    """Build on `device` without initialising; call `materialize` afterwards.

    On the meta device nothing is allocated, which is how paper-size models are built
    before parallelism decides what each rank holds.
    """
    cls = EncoderDecoder if cfg.arch == "encoder_decoder" else Decoder
    with torch.device(device):
        return cls(cfg)


def materialize(model: nn.Module, device: torch.device | str, seed: int = 0) -> nn.Module:
    """Allocate storage on `device` and initialise every parameter and buffer from `seed`
    (the same weights as any parallel layout of the same seed)."""
    model.to_empty(device=device)
    model.init_weights(seed)
    return model


def model_inputs(batch: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """The subset of a packed batch that the model's forward takes."""
    keys = SEQ2SEQ_KEYS if arch == "encoder_decoder" else DECODER_KEYS
    return {k: batch[k] for k in keys if k in batch}


__all__ = ["Decoder", "EncoderDecoder", "build_model", "materialize", "model_inputs"]
