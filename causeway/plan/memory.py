"""Per-rank memory of a layout: optimizer state, activations and working buffers.

Parameters and gradients come from the real layout applied to the meta model (`report.py`
measures local shards); this module holds the rules for what cannot be measured there.

Activations kept for backward, per token, per transformer block, eager PyTorch with a
flash/SDPA kernel (attention scores are never stored), in the compute dtype (bf16 = 2
bytes) unless marked fp32. d = d_model, q = n_heads x head_dim, kv = n_kv_heads x head_dim,
f = d_ff, t = tp:

| kept tensor | elements | under tp |
|---|---|---|
| inputs of attention_norm and mlp_norm (the residual stream) | 2 d | / t (sequence shards) |
| normed inputs of wq/wk/wv and of w1/w3 | 2 d | full (kept all-gathered, see below) |
| q, k, v after RoPE (kept by the attention kernel) | q + 2 kv | / t (heads) |
| attention output (kept by the kernel) and its [B, T, q] copy, the input of wo | 2 q | / t |
| MLP: w1 x, act(w1 x), w3 x, and their product (the input of w2) | 4 f | / t |
| fp32: rms_norm's 1/rms x 2, the kernel's log-sum-exp per head | 2 + n_heads | / t |

Under tp the column-parallel linears keep their all-gathered input (DTensor sequence
parallelism), so the normed inputs are not divided by t; Megatron re-gathers them in
backward instead of keeping them.
A decoder block of an encoder-decoder adds cross-attention: per decoder token its norm
input (d / t), gathered input (d), q and output (3 q / t), per head lse; per encoder
token k and v (2 kv / t) and, under tp, the all-gathered memory (d) that each block's
input preparation makes (without tp every block reads the same memory tensor, kept once).

Full activation checkpointing keeps only each block's input (d / t per token) plus, while
one block is recomputed in backward, that block's working set above. `every_k`
checkpoints the blocks at positions 0, k, 2k, ... and keeps everything for the others.

Micro-batches in flight on pipeline rank r of pp (n micro-batches, v virtual stages):
no pipeline 1; GPipe n (all forwards before any backward); 1F1B min(pp - r, n);
interleaved 1F1B, in chunks of 1/v of the rank's blocks, torch's warm-up count
min((v - 1) m + 2 (pp - 1 - r) + 1, n v) with m micro-batches per round (about pp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from causeway.config import RunConfig
from causeway.config.schema import ModelConfig

FP32 = 4


@dataclass
class RankShape:
    """What one pipeline rank holds, measured on the parallelised meta model."""

    pp_rank: int
    parameters: int = 0  # local elements, each unique parameter once
    optimizer_floats: int = 0  # fp32 optimizer state elements
    encoder_layers: int = 0
    decoder_layers: int = 0
    largest_block: int = 0  # local elements of the largest block
    root: int = 0  # local elements outside the blocks (embedding, norms, output)
    stages: list[int] = field(default_factory=list)
    has_head: bool = False


def optimizer_floats(name: str, local_numel: int, global_shape: tuple[int, ...]) -> int:
    """fp32 state per parameter: AdamW exp_avg + exp_avg_sq on the local shard.

    torch.optim.Adafactor keeps factored second moments for matrices, made with
    `grad.new_zeros(rows / cols shape)`, which DTensor returns replicated in the
    parameter's global shape: rows + cols floats per matrix on every rank. Vectors keep a
    full second moment like the shard (`zeros_like`).
    """
    if name == "adamw":
        return 2 * local_numel
    if len(global_shape) >= 2:
        rows = math.prod(global_shape[:-1])
        cols = math.prod(global_shape[:-2]) * global_shape[-1]
        return rows + cols
    return local_numel


def act_bytes(cfg: RunConfig) -> int:
    """Compute dtype on GPUs: bf16 unless the recipe asks for fp32."""
    return FP32 if cfg.train.precision == "fp32" else 2


def self_block_bytes(m: ModelConfig, tp: int, act: int) -> float:
    """Bytes per token kept by one self-attention + gated-MLP block (table above)."""
    q, kv = m.n_heads * m.dim_per_head, m.kv_heads * m.dim_per_head
    sharded = 2 * m.d_model + q + 2 * kv + 2 * q + 4 * m.d_ff
    gathered = 2 * m.d_model
    return act * (sharded / tp + gathered) + FP32 * (2 + m.n_heads) / tp


def cross_bytes(m: ModelConfig, tp: int, act: int) -> tuple[float, float]:
    """(per decoder token, per encoder token) bytes kept by one cross-attention."""
    q, kv = m.n_heads * m.dim_per_head, m.kv_heads * m.dim_per_head
    per_query = act * ((m.d_model + 3 * q) / tp + m.d_model) + FP32 * (1 + m.n_heads) / tp
    per_key = act * (2 * kv / tp + (m.d_model if tp > 1 else 0))
    return per_query, per_key


def sequence_lengths(cfg: RunConfig) -> tuple[int, int]:
    """(encoder, decoder) tokens per row; a decoder has no encoder side."""
    d = cfg.data
    if cfg.model.arch == "encoder_decoder":
        return d.inputs_length, d.targets_length
    return 0, d.seq_len


def checkpointed_blocks(n: int, mode: str, every: int) -> int:
    if mode == "full":
        return n
    if mode == "every_k":
        return math.ceil(n / every)
    return 0


def micro_batch_activations(cfg: RunConfig, tp: int, rank: RankShape, mode: str) -> float:
    """Bytes one micro-batch leaves on `rank` until its backward, under checkpoint `mode`."""
    m, micro, act = cfg.model, cfg.data.micro_batch_size, act_bytes(cfg)
    enc_len, dec_len = sequence_lengths(cfg)
    every = cfg.parallel.activation_checkpoint_every
    block_input = act * m.d_model / tp
    enc_block = self_block_bytes(m, tp, act) * enc_len
    dec_block = self_block_bytes(m, tp, act) * dec_len
    if m.arch == "encoder_decoder":
        per_query, per_key = cross_bytes(m, tp, act)
        dec_block += per_query * dec_len + per_key * enc_len
    kept = working = 0.0
    for n, block, length in (
        (rank.encoder_layers, enc_block, enc_len),
        (rank.decoder_layers, dec_block, dec_len),
    ):
        ckpt = checkpointed_blocks(n, mode, every)
        kept += ckpt * block_input * length + (n - ckpt) * block
        if ckpt:
            working = max(working, block)
    if m.arch == "encoder_decoder":
        # encoder_norm input, and the memory itself when every block reads it whole
        kept += enc_len * (block_input + (act * m.d_model if tp == 1 else 0))
    if rank.has_head:
        # final norm input; the fused loss keeps d(loss)/d(hidden), whole sequence, fp32
        kept += dec_len * (block_input + FP32 * m.d_model)
    return micro * kept, micro * working


def micro_batches(cfg: RunConfig, dp: int) -> int:
    return cfg.data.batch_size // dp // cfg.data.micro_batch_size


def in_flight(cfg: RunConfig, pp: int, n_micro: int, pp_rank: int) -> float:
    """Micro-batches whose activations pipeline rank `pp_rank` holds at once, in units
    of all its blocks (rule in the module docstring)."""
    p = cfg.parallel
    if pp == 1:
        return 1.0
    if p.pp_schedule == "gpipe":
        return float(n_micro)
    if p.pp_schedule == "1f1b":
        return float(min(pp - pp_rank, n_micro))
    v = p.virtual_stages
    per_round = n_micro // max(1, n_micro // pp)
    chunks = min((v - 1) * per_round + 2 * (pp - 1 - pp_rank) + 1, n_micro * v)
    return chunks / v


def activation_bytes(cfg: RunConfig, tp: int, pp: int, dp: int, rank: RankShape, mode: str):
    """Peak activation bytes on `rank` under checkpoint `mode`."""
    kept, working = micro_batch_activations(cfg, tp, rank, mode)
    flight = in_flight(cfg, pp, micro_batches(cfg, dp), rank.pp_rank)
    return int(kept * flight + working)


def buffer_bytes(cfg: RunConfig, dp: int, dp_shard: int, pp: int, tp: int, rank: RankShape) -> int:
    """Transient working memory: FSDP's unsharded copies and the fused loss's scratch.

    FSDP2 (per block) holds one block gathered in the compute dtype plus the next one
    prefetched, and one block's unsharded gradient (compute dtype, then fp32 for the
    reduce-scatter); the root (embedding, norms) stays gathered from forward to backward.
    Under a pipeline schedule torch's stage turns off resharding after backward and
    gradient sync until the last micro-batch, so the rank's whole stage stays gathered
    and its unsharded fp32 gradients accumulate: that replaces the per-block figures.
    """
    m, act = cfg.model, act_bytes(cfg)
    total = 0.0
    if dp > 1:  # FSDP is applied
        if pp > 1:
            total += rank.parameters * dp_shard * (act + FP32)
        else:
            block = rank.largest_block * dp_shard
            total += 2 * block * act + block * (act + FP32) + rank.root * dp_shard * act
    if rank.has_head:
        vocab = m.vocab_size / tp
        # fp32 weight-gradient accumulator + a 256-token chunk of logits and probabilities
        total += FP32 * vocab * m.d_model + 2 * FP32 * 256 * vocab
    return int(total)
