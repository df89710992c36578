"""Parameter and FLOP counts used for MFU and for `causeway plan`."""

from __future__ import annotations

from torch import nn

from causeway.config.schema import ModelConfig


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied weights once); works on the meta device."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def matmul_parameters(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token (all but the input embedding)."""
    head = cfg.dim_per_head
    attn = cfg.d_model * head * (2 * cfg.n_heads + 2 * cfg.kv_heads)
    mlp = 3 * cfg.d_model * cfg.d_ff
    output = cfg.d_model * cfg.vocab_size
    if cfg.arch == "encoder_decoder":
        # Per token of each side; cross-attention K/V act on encoder tokens.
        return cfg.encoder_layers * (attn + mlp) + cfg.n_layers * (2 * attn + mlp) + output
    return cfg.n_layers * (attn + mlp) + output


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul params + attention scores (PaLM appendix B).

    Attention is counted over the full T x T square whatever the visibility, as the
    PaLM/Megatron convention does, so MFU is comparable across visibilities.
    """
    layers = cfg.n_layers + (cfg.encoder_layers if cfg.arch == "encoder_decoder" else 0)
    attention = 12 * layers * cfg.n_heads * cfg.dim_per_head * seq_len
    return 6 * matmul_parameters(cfg) + attention


def flops_per_sequence(cfg: ModelConfig, length: int, target_length: int = 0) -> float:
    """Training FLOPs of one packed row: `length` tokens for a decoder; for an
    encoder-decoder `length` encoder and `target_length` decoder tokens, each side
    counted over its own tokens (encoder blocks and cross-attention K/V over the inputs;
    decoder blocks and the output over the targets)."""
    if cfg.arch == "decoder":
        return flops_per_token(cfg, length) * length
    enc, dec, hd = length, target_length, cfg.dim_per_head
    q, kv = cfg.d_model * hd * cfg.n_heads, cfg.d_model * hd * cfg.kv_heads
    self_attn, mlp = 2 * q + 2 * kv, 3 * cfg.d_model * cfg.d_ff
    enc_side = enc * 6 * (cfg.encoder_layers * (self_attn + mlp) + cfg.n_layers * 2 * kv)
    dec_side = dec * 6 * (cfg.n_layers * (self_attn + 2 * q + mlp) + cfg.d_model * cfg.vocab_size)
    squares = cfg.encoder_layers * enc * enc + cfg.n_layers * dec * (dec + enc)
    return float(enc_side + dec_side + 12 * cfg.n_heads * hd * squares)


def causal_attention_saving(cfg: ModelConfig, length: int, target_length: int = 0) -> float:
    """Training FLOPs of one row that Megatron-LM's current convention does not count:
    half of each causal self-attention square (its masked upper triangle). Prefix and
    bidirectional self-attention, encoders and cross-attention are counted whole."""
    hd = cfg.dim_per_head
    if cfg.arch == "decoder":
        square = length * length if (cfg.visibility or "causal") == "causal" else 0
    else:
        square = target_length * target_length  # the decoder's self-attention is causal
    return 12 * cfg.n_heads * hd * cfg.n_layers * square / 2
