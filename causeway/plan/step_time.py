"""`causeway plan`'s step-time model: one training step of one GPU, in parts.

Every part is computed from the layout's shapes and the GPU's rates (`hardware.py`); each
pipeline rank is timed and the slowest one sets the step. Per micro-batch:

- matmuls: every linear of the rank's blocks (and the output layer on the last stage),
  forward, input gradient and weight gradient, each timed as one GEMM of its own
  M x N x K: the best measured matmul rate, times wave quantization (output tiles of
  TILE x TILE spread over the GPU's SMs in whole waves; a GEMM with fewer tiles than SMs
  is split along K, as cuBLAS does), times K / (K + K_FILL) for a short reduction's
  pipeline fill; never faster than reading its operands and writing its output from memory.
- attention: the flash kernel's executed FLOPs at its own rate: 4 x heads x head_dim
  per visible query-key pair forward and 2.5 times that backward (FlashAttention-2's
  count); causal masking visits half the pairs, prefix masking (a prefix split uniformly
  at random, as the prefix-LM objective draws it) about two thirds, bidirectional all.
- memory-bound work: norms, RoPE, residual adds, the gated activation and layout copies
  (ELEMENTWISE_PASSES reads and writes of each per-token tensor forward, twice that
  backward; halved by torch.compile's fusion), the loss over the vocabulary in fp32
  chunks, and once per step the optimizer over the local shard, all at memory bandwidth.
- launch overhead: eager PyTorch spends about LAUNCH_S of CPU per kernel (with DTensor
  under tensor parallelism, more); when the GPU work of a micro-batch is shorter than its
  launches, the difference is exposed.
- recomputation: the forward of every checkpointed block again, in backward.

Per step: the pipeline bubble ((pp - 1) / (micro-batches x virtual stages) of the rank's
compute, every schedule), tensor-parallel all-gathers and reduce-scatters (not overlapped,
plus a latency per collective), pipeline sends, and FSDP: its all-gathers and
reduce-scatters overlap compute (prefetching), except the first block's gather and the
last block's reduce-scatter, and whatever is longer than the compute. The trainer defers
the gradient sync to the last micro-batch and keeps parameters gathered between
micro-batches (train/step.py): n + 1 gathers and one reduce-scatter per step, as
collectives.py counts them and tests/parallel/test_collectives.py checks on a real run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from causeway.config import RunConfig
from causeway.models.flops import flops_per_sequence
from causeway.parallel.dims import ParallelDims
from causeway.plan.hardware import GPU, GPUS_PER_NODE, SUSTAINED, bandwidth
from causeway.plan.memory import (
    FP32,
    RankShape,
    act_bytes,
    checkpointed_blocks,
    micro_batches,
    sequence_lengths,
)

TILE = 128  # output tile edge of the bf16 GEMM kernels
K_FILL = 64  # reduction length lost to a GEMM's pipeline fill and drain
ELEMENTWISE_PASSES = 5  # reads + writes of each per-token tensor in a block's forward
LAUNCH_S = 10e-6  # CPU time per eager kernel launch
KERNELS_PER_BLOCK = 75  # forward + backward kernels of one block, eager
COLLECTIVE_LATENCY_S = {"intra": 15e-6, "inter": 30e-6}
PREFIX_VISIBLE = 2 / 3  # visible pairs of a prefix row split uniformly at random
COMPILE_FUSION = 0.5  # torch.compile: elementwise traffic and kernel count kept
OPTIMIZER_BYTES = {"params": 16, "state": 8}  # per element: p, g read + p write; state r+w


@dataclass(frozen=True)
class Gemm:
    m: int
    n: int
    k: int


def gemm_seconds(gpu: GPU, g: Gemm, act: int) -> float:
    flops = 2.0 * g.m * g.n * g.k
    tiles = math.ceil(g.m / TILE) * math.ceil(g.n / TILE)
    splits = max(1, min(gpu.sms // tiles, g.k // (4 * TILE)))  # split-K when few tiles
    units = tiles * splits
    waves = units / (math.ceil(units / gpu.sms) * gpu.sms)
    fill = (g.k / splits) / (g.k / splits + K_FILL)
    compute = flops / (gpu.matmul_tflops * 1e12 * SUSTAINED * waves * fill)
    memory = act * (g.m * g.k + g.k * g.n + g.m * g.n) / gpu.hbm_bytes_s
    return max(compute, memory)


def training_gemms_seconds(gpu: GPU, forward: list[Gemm], act: int) -> tuple[float, float]:
    """(forward, backward) seconds: backward is the input gradient (M x K x N) and the
    weight gradient (K x N x M) of each forward GEMM."""
    fwd = sum(gemm_seconds(gpu, g, act) for g in forward)
    bwd = sum(
        gemm_seconds(gpu, Gemm(g.m, g.k, g.n), act) + gemm_seconds(gpu, Gemm(g.k, g.n, g.m), act)
        for g in forward
    )
    return fwd, bwd


@dataclass
class BlockWork:
    """One block's forward on one micro-batch of one tensor-parallel rank."""

    gemms: list[Gemm]
    attention_flops: float  # executed forward FLOPs of the attention kernels
    elementwise_bytes: float


def visible_fraction(visibility: str) -> float:
    return {"causal": 0.5, "prefix": PREFIX_VISIBLE, "bidirectional": 1.0}[visibility]


def self_block(cfg: RunConfig, tp: int, tokens: int, length: int, visibility: str) -> BlockWork:
    m = cfg.model
    q, kv = m.n_heads * m.dim_per_head, m.kv_heads * m.dim_per_head
    d, f = m.d_model, m.d_ff
    qkv, wo = Gemm(tokens, (q + 2 * kv) // tp, d), Gemm(tokens, d, q // tp)
    w1 = w3 = Gemm(tokens, f // tp, d)
    gemms = [qkv, wo, w1, w3, Gemm(tokens, d, f // tp)]
    rows = tokens // length
    attention = 4.0 * rows * length * length * visible_fraction(visibility) * q / tp
    per_token = 2 * d / tp + 2 * (q + kv) / tp + f / tp  # norms/residual, q k v, the MLP
    elementwise = ELEMENTWISE_PASSES * per_token * tokens * act_bytes(cfg)
    return BlockWork(gemms, attention, elementwise)


def cross_block(cfg: RunConfig, tp: int, rows: int, enc: int, dec: int) -> BlockWork:
    """A decoder block of an encoder-decoder: causal self-attention plus cross-attention."""
    m = cfg.model
    q, kv = m.n_heads * m.dim_per_head, m.kv_heads * m.dim_per_head
    work = self_block(cfg, tp, rows * dec, dec, "causal")
    work.gemms += [Gemm(rows * dec, q // tp, m.d_model), Gemm(rows * enc, 2 * kv // tp, m.d_model),
                   Gemm(rows * dec, m.d_model, q // tp)]  # fmt: skip
    work.attention_flops += 4.0 * rows * dec * enc * q / tp
    work.elementwise_bytes += (
        ELEMENTWISE_PASSES * (m.d_model / tp + q / tp) * rows * dec * act_bytes(cfg)
    )
    return work


def rank_blocks(cfg: RunConfig, tp: int, rank: RankShape) -> list[tuple[BlockWork, int]]:
    """(work, how many) for each kind of block the rank holds, per micro-batch."""
    m, rows = cfg.model, cfg.data.micro_batch_size
    enc, dec = sequence_lengths(cfg)
    if m.arch == "decoder":
        visibility = m.visibility or "causal"
        return [(self_block(cfg, tp, rows * dec, dec, visibility), rank.decoder_layers)]
    encoder = self_block(cfg, tp, rows * enc, enc, "bidirectional")
    return [
        (encoder, rank.encoder_layers),
        (cross_block(cfg, tp, rows, enc, dec), rank.decoder_layers),
    ]


@dataclass
class MicroBatch:
    """Seconds of one micro-batch on one rank, by part."""

    matmul: float = 0.0
    attention: float = 0.0
    memory_bound: float = 0.0
    recompute: float = 0.0
    launches: int = 0

    @property
    def gpu(self) -> float:
        return self.matmul + self.attention + self.memory_bound + self.recompute


def micro_batch_seconds(
    cfg: RunConfig, dims: ParallelDims, gpu: GPU, rank: RankShape
) -> MicroBatch:
    act, p, tp = act_bytes(cfg), cfg.parallel, dims.tp
    fusion = COMPILE_FUSION if p.compile else 1.0
    out = MicroBatch()
    for work, count in rank_blocks(cfg, tp, rank):
        if not count:
            continue
        fwd, bwd = training_gemms_seconds(gpu, work.gemms, act)
        attention = work.attention_flops / (gpu.attention_tflops * 1e12 * SUSTAINED)
        elementwise = work.elementwise_bytes * fusion / gpu.hbm_bytes_s
        ckpt = checkpointed_blocks(count, p.activation_checkpoint, p.activation_checkpoint_every)
        out.matmul += count * (fwd + bwd)
        out.attention += count * attention * 3.5  # forward, and backward at 2.5 times it
        out.memory_bound += count * elementwise * 3  # forward, and backward at twice it
        out.recompute += ckpt * (fwd + attention + elementwise)
        out.launches += round(count * KERNELS_PER_BLOCK * fusion * (1 + ckpt / count / 3))
    if rank.has_head:
        m, tokens = cfg.model, cfg.data.micro_batch_size * sequence_lengths(cfg)[1]
        fwd, bwd = training_gemms_seconds(gpu, [Gemm(tokens, m.vocab_size // tp, m.d_model)], act)
        out.matmul += fwd + bwd
        out.memory_bound += 4 * FP32 * tokens * m.vocab_size / tp / gpu.hbm_bytes_s
    return out


def ring(nbytes: float, size: int) -> float:
    """Bytes each rank moves in a ring all-gather or reduce-scatter of `nbytes`."""
    return nbytes * (size - 1) / size


def latency(gpu_span: int) -> float:
    return COLLECTIVE_LATENCY_S["intra" if gpu_span <= GPUS_PER_NODE else "inter"]


def tp_seconds(
    cfg: RunConfig, dims: ParallelDims, gpu: GPU, rank: RankShape, passes: float
) -> float:
    """Sequence-parallel all-gathers / reduce-scatters of one rank in one step."""
    if dims.tp == 1:
        return 0.0
    m, micro = cfg.model, cfg.data.micro_batch_size
    enc, dec = sequence_lengths(cfg)
    row = micro * m.d_model * act_bytes(cfg)  # bytes of one token position, whole hidden
    per_pass = rank.decoder_layers * 4 * dec * row  # attention and MLP: gather in, scatter out
    count = rank.decoder_layers * 4
    if m.arch == "encoder_decoder":
        per_pass += rank.encoder_layers * 4 * enc * row
        per_pass += rank.decoder_layers * (2 * dec + enc) * row  # cross-attention
        count += rank.encoder_layers * 4 + rank.decoder_layers * 3
    if rank.has_head or rank.pp_rank == 0:
        per_pass += dec * row  # embedding output, head input
        count += 1
    seconds = ring(per_pass * passes, dims.tp) / bandwidth(gpu, 1, dims.tp)
    seconds += count * passes * latency(dims.tp)
    return micro_batches(cfg, dims.dp) * seconds


def pp_seconds(cfg: RunConfig, dims: ParallelDims, gpu: GPU) -> float:
    """Activations forward and their gradients back across each stage boundary."""
    if dims.pp == 1:
        return 0.0
    m, micro = cfg.model, cfg.data.micro_batch_size
    message = micro * sequence_lengths(cfg)[1] * m.d_model * act_bytes(cfg) / dims.tp
    sends = 2 * micro_batches(cfg, dims.dp) * dims.virtual_stages
    span = dims.dp * dims.tp * dims.pp
    return sends * (message / bandwidth(gpu, dims.dp * dims.tp, dims.pp) + latency(span))


@dataclass
class FsdpTraffic:
    total: float  # seconds of all FSDP collectives in a step
    unhidden: float  # the first gather and the last reduce-scatter, which nothing overlaps


def fsdp_seconds(cfg: RunConfig, dims: ParallelDims, gpu: GPU, rank: RankShape) -> FsdpTraffic:
    if dims.dp == 1:
        return FsdpTraffic(0.0, 0.0)
    n_micro, act = micro_batches(cfg, dims.dp), act_bytes(cfg)
    shard_bw = bandwidth(gpu, dims.tp, dims.dp_shard)
    gather = ring(rank.parameters * dims.dp_shard * act, dims.dp_shard) / shard_bw
    scatter = ring(rank.parameters * dims.dp_shard * FP32, dims.dp_shard) / shard_bw
    total = (n_micro + 1) * gather + scatter
    if dims.dp_replicate > 1:  # HSDP: all-reduce the sharded fp32 gradients across replicas
        stride = dims.tp * dims.dp_shard
        total += (
            2
            * ring(rank.parameters * FP32, dims.dp_replicate)
            / bandwidth(gpu, stride, dims.dp_replicate)
        )
    blocks = max(1, rank.encoder_layers + rank.decoder_layers)
    return FsdpTraffic(total, (gather + scatter) / blocks)


def optimizer_seconds(gpu: GPU, rank: RankShape) -> float:
    nbytes = (
        rank.parameters * OPTIMIZER_BYTES["params"]
        + rank.optimizer_floats * OPTIMIZER_BYTES["state"]
    )
    return nbytes / gpu.hbm_bytes_s


def recompute_passes(cfg: RunConfig, rank: RankShape) -> float:
    """Forward passes the tensor-parallel collectives run per micro-batch: forward,
    backward, and the recomputed forward of checkpointed blocks."""
    p = cfg.parallel
    n = rank.encoder_layers + rank.decoder_layers
    ckpt = checkpointed_blocks(n, p.activation_checkpoint, p.activation_checkpoint_every)
    return 2 + (ckpt / n if n else 0.0)


def rank_step(cfg: RunConfig, dims: ParallelDims, gpu: GPU, rank: RankShape) -> dict[str, float]:
    """Seconds of one step on pipeline rank `rank`, by part."""
    n_micro = micro_batches(cfg, dims.dp)
    mb = micro_batch_seconds(cfg, dims, gpu, rank)
    launch = max(0.0, mb.launches * LAUNCH_S * (2 if dims.tp > 1 else 1) - mb.gpu)
    compute = n_micro * mb.gpu
    bubble = 0.0
    if dims.pp > 1:
        bubble = (dims.pp - 1) / (n_micro * dims.virtual_stages) * (compute + n_micro * launch)
    fsdp = fsdp_seconds(cfg, dims, gpu, rank)
    parts = {
        "matmul": n_micro * mb.matmul,
        "attention": n_micro * mb.attention,
        "memory_bound": n_micro * mb.memory_bound + optimizer_seconds(gpu, rank),
        "recompute": n_micro * mb.recompute,
        "launch_overhead": n_micro * launch,
        "pipeline_bubble": bubble,
        "tp_communication": tp_seconds(cfg, dims, gpu, rank, recompute_passes(cfg, rank)),
        "pp_communication": pp_seconds(cfg, dims, gpu),
        "fsdp_exposed": fsdp.unhidden + max(0.0, fsdp.total - fsdp.unhidden - compute),
    }
    parts["fsdp_communication"] = fsdp.total  # not summed: mostly hidden behind compute
    return parts


EXPOSED = ("matmul", "attention", "memory_bound", "recompute", "launch_overhead",
           "pipeline_bubble", "tp_communication", "pp_communication", "fsdp_exposed")  # fmt: skip


def model_flops_per_step(cfg: RunConfig) -> float:
    """Training FLOPs of one step (see `flops_per_sequence` for the conventions)."""
    enc, dec = sequence_lengths(cfg)
    if cfg.model.arch == "decoder":
        return flops_per_sequence(cfg.model, dec) * cfg.data.batch_size
    return flops_per_sequence(cfg.model, enc, dec) * cfg.data.batch_size


def step_estimate(cfg: RunConfig, dims: ParallelDims, gpu: GPU, ranks: list[RankShape]) -> dict:
    """Seconds per step of the slowest pipeline rank, its parts and shares, and MFU."""
    timed = [rank_step(cfg, dims, gpu, rank) for rank in ranks]
    totals = [sum(parts[k] for k in EXPOSED) for parts in timed]
    slowest = max(range(len(ranks)), key=totals.__getitem__)
    parts, total = timed[slowest], totals[slowest]
    flops = model_flops_per_step(cfg)
    return {
        "flops_per_step": flops,
        "step_time_s": total,
        "slowest_pipeline_rank": slowest,
        "mfu": flops / (total * dims.world_size * gpu.peak_tflops * 1e12),
        "parts_s": {k: round(v, 6) for k, v in parts.items()},
        "shares": {k: round(parts[k] / total, 4) for k in EXPOSED},
    }


ASSUMPTIONS = {
    "gemm_tile": TILE,
    "gemm_k_fill": K_FILL,
    "elementwise_passes": ELEMENTWISE_PASSES,
    "launch_s_per_kernel": LAUNCH_S,
    "kernels_per_block": KERNELS_PER_BLOCK,
    "prefix_visible_fraction": round(PREFIX_VISIBLE, 4),
    "overlap": "tp and pp communication exposed; fsdp overlapped with compute but for "
    "the first gather and the last reduce-scatter",
}
