"""GPUs that `causeway plan` knows, and its step-time / MFU estimate.

Vendor datasheet figures (NVIDIA H100 Tensor Core GPU datasheet, SXM5; H200 datasheet,
SXM; A100 80GB datasheet, SXM4): dense bf16 tensor-core peak 989 / 989 / 312 TFLOP/s;
memory 80 / 141 / 80 GB (nvidia-smi shows these as about 80 / 140 / 80 GiB, e.g. 81559
MiB on an H100 SXM, so they are taken as GiB); NVLink 900 / 900 / 600 GB/s per GPU, both
directions together. Nodes as in DGX/HGX systems: 8 GPUs, one InfiniBand port per GPU,
400 Gb/s NDR (H100, H200) or 200 Gb/s HDR (A100).

Assumptions of the estimate (stated in its output too):
- collectives reach 80% of the one-direction link rate: intra-node 360 / 360 / 240 GB/s,
  inter-node 40 / 40 / 20 GB/s per GPU; a group whose ranks span more than one node
  (mesh order pp, dp_replicate, dp_shard, tp: tp innermost) runs at the inter-node rate;
- matmuls reach 60% of peak (well-tuned bf16 training at d_model 4096 reaches 40-60%
  model FLOPs utilisation end to end);
- full activation checkpointing recomputes each block's forward (1/3 of its FLOPs);
- the pipeline bubble is (pp - 1) / (micro-batches x virtual stages) of the compute;
- tensor-parallel collectives (all-gather / reduce-scatter around attention and MLP)
  and pipeline sends are on the critical path, not overlapped;
- FSDP's all-gathers and reduce-scatters overlap with compute (prefetching); only the
  part longer than the compute is exposed. The trainer defers the gradient sync to the
  last micro-batch and keeps parameters gathered from one backward to the next forward
  (train/step.py), as torch's pipeline stage does: n + 1 all-gathers of the parameters
  and one reduce-scatter of the gradients per step (counted exactly, per FSDP unit, in
  collectives.py and checked against a real run by tests/parallel/test_collectives.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from causeway.config import ConfigError, RunConfig
from causeway.models.flops import flops_per_sequence
from causeway.parallel.dims import ParallelDims
from causeway.plan.memory import (
    FP32,
    RankShape,
    act_bytes,
    checkpointed_blocks,
    micro_batches,
    sequence_lengths,
)

MATMUL_EFFICIENCY = 0.6
LINK_EFFICIENCY = 0.8
GPUS_PER_NODE = 8


@dataclass(frozen=True)
class GPU:
    name: str
    peak_tflops: float  # dense bf16
    memory_gib: float
    nvlink_gbs: float  # per GPU, both directions
    network_gbits: float  # per GPU, one direction

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    @property
    def intra_node_bytes_s(self) -> float:
        return self.nvlink_gbs / 2 * 1e9 * LINK_EFFICIENCY

    @property
    def inter_node_bytes_s(self) -> float:
        return self.network_gbits / 8 * 1e9 * LINK_EFFICIENCY


GPUS = {
    "h100": GPU("h100", 989.0, 80.0, 900.0, 400.0),
    "h200": GPU("h200", 989.0, 141.0, 900.0, 400.0),
    "a100": GPU("a100", 312.0, 80.0, 600.0, 200.0),
}


def gpu_spec(name: str) -> GPU:
    if name not in GPUS:
        raise ConfigError(f"unknown --gpu '{name}'; known: {', '.join(GPUS)}")
    return GPUS[name]


def tokens_per_step(cfg: RunConfig) -> int:
    """Every position of every row, both sides of an encoder-decoder (as the trainer)."""
    return cfg.data.batch_size * sum(sequence_lengths(cfg))


def head_flops_per_row(cfg: RunConfig) -> float:
    m = cfg.model
    return 6.0 * m.d_model * m.vocab_size * sequence_lengths(cfg)[1]


def model_flops_per_step(cfg: RunConfig) -> float:
    """Training FLOPs of one step (see `flops_per_sequence` for the conventions)."""
    enc, dec = sequence_lengths(cfg)
    if cfg.model.arch == "decoder":
        return flops_per_sequence(cfg.model, dec) * cfg.data.batch_size
    return flops_per_sequence(cfg.model, enc, dec) * cfg.data.batch_size


def bandwidth(gpu: GPU, stride: int, size: int) -> float:
    """Bytes/s of a group of `size` ranks `stride` apart in the global rank order."""
    return gpu.intra_node_bytes_s if stride * size <= GPUS_PER_NODE else gpu.inter_node_bytes_s


def ring(nbytes: float, size: int) -> float:
    """Bytes each rank moves in a ring all-gather or reduce-scatter of `nbytes`."""
    return nbytes * (size - 1) / size


def recompute_fraction(cfg: RunConfig, parts: int) -> float:
    """Share of the block FLOPs run again in backward under activation checkpointing;
    `every_k` counts positions within each of the `parts` the blocks are split into."""
    m, p = cfg.model, cfg.parallel
    stacks = [m.n_layers] + ([m.encoder_layers] if m.arch == "encoder_decoder" else [])
    mode, every = p.activation_checkpoint, p.activation_checkpoint_every
    ckpt = sum(checkpointed_blocks(n // parts, mode, every) * parts for n in stacks)
    return ckpt / sum(stacks) / 3.0


def tp_seconds(cfg: RunConfig, dims: ParallelDims, gpu: GPU, passes: float) -> float:
    """Sequence-parallel all-gathers / reduce-scatters of one rank in one step."""
    if dims.tp == 1:
        return 0.0
    m, micro = cfg.model, cfg.data.micro_batch_size
    enc, dec = sequence_lengths(cfg)
    row = micro * m.d_model * act_bytes(cfg)  # bytes of one token position, whole hidden
    per_pass = m.n_layers * 4 * dec * row  # attention and MLP: gather in, scatter out
    per_pass += 2 * dec * row  # embedding output, head input
    if m.arch == "encoder_decoder":
        per_pass += m.encoder_layers * 4 * enc * row + enc * row  # encoder blocks, embedding
        per_pass += m.n_layers * (2 * dec + enc) * row  # cross-attention: query side, memory
    volume = ring(per_pass * passes / dims.pp, dims.tp)
    return micro_batches(cfg, dims.dp) * volume / bandwidth(gpu, 1, dims.tp)


def pp_seconds(cfg: RunConfig, dims: ParallelDims, gpu: GPU) -> float:
    """Activations forward and their gradients back across each stage boundary."""
    if dims.pp == 1:
        return 0.0
    m, micro = cfg.model, cfg.data.micro_batch_size
    message = micro * sequence_lengths(cfg)[1] * m.d_model * act_bytes(cfg) / dims.tp
    sends = 2 * micro_batches(cfg, dims.dp) * dims.virtual_stages
    return sends * message / bandwidth(gpu, dims.dp * dims.tp, dims.pp)


def fsdp_seconds(cfg: RunConfig, dims: ParallelDims, gpu: GPU, rank: RankShape) -> float:
    if dims.dp == 1:
        return 0.0
    n_micro = micro_batches(cfg, dims.dp)
    unsharded = rank.parameters * dims.dp_shard
    gather = ring(unsharded * act_bytes(cfg), dims.dp_shard)
    scatter = ring(unsharded * FP32, dims.dp_shard)
    gathers, syncs = n_micro + 1, 1
    shard_bw = bandwidth(gpu, dims.tp, dims.dp_shard)
    seconds = (gathers * gather + syncs * scatter) / shard_bw
    if dims.dp_replicate > 1:  # HSDP: all-reduce the sharded fp32 gradients across replicas
        reduce = 2 * ring(rank.parameters * FP32, dims.dp_replicate)
        stride = dims.tp * dims.dp_shard
        seconds += syncs * reduce / bandwidth(gpu, stride, dims.dp_replicate)
    return seconds


def step_estimate(cfg: RunConfig, dims: ParallelDims, gpu: GPU, rank: RankShape) -> dict:
    """Seconds per step (and their parts) and MFU for the most loaded rank `rank`."""
    flops = model_flops_per_step(cfg)
    head = head_flops_per_row(cfg) * cfg.data.batch_size
    parts = dims.pp * dims.virtual_stages
    fraction = recompute_fraction(cfg, parts)
    recompute = (flops - head) * fraction
    rate = gpu.peak_tflops * 1e12
    compute = flops / dims.world_size / (rate * MATMUL_EFFICIENCY)
    recompute_s = recompute / dims.world_size / (rate * MATMUL_EFFICIENCY)
    n_micro = micro_batches(cfg, dims.dp)
    bubble = 0.0
    if dims.pp > 1:
        bubble = (dims.pp - 1) / (n_micro * dims.virtual_stages) * (compute + recompute_s)
    passes = 2 + 3 * fraction  # forward, backward, forward again if recomputed
    tp = tp_seconds(cfg, dims, gpu, passes)
    pp = pp_seconds(cfg, dims, gpu)
    fsdp = fsdp_seconds(cfg, dims, gpu, rank)
    fsdp_exposed = max(0.0, fsdp - compute - recompute_s)
    total = compute + recompute_s + bubble + tp + pp + fsdp_exposed
    breakdown = {
        "compute": compute,
        "recompute": recompute_s,
        "pipeline_bubble": bubble,
        "tp_communication": tp,
        "pp_communication": pp,
        "fsdp_communication": fsdp,
        "fsdp_exposed": fsdp_exposed,
    }
    return {
        "flops_per_step": flops,
        "step_time_s": total,
        "mfu": flops / (total * dims.world_size * rate),
        "parts_s": {k: round(v, 4) for k, v in breakdown.items()},
    }


ASSUMPTIONS = {
    "matmul_efficiency": MATMUL_EFFICIENCY,
    "link_efficiency": LINK_EFFICIENCY,
    "gpus_per_node": GPUS_PER_NODE,
    "overlap": "tp and pp communication exposed; fsdp overlapped with compute",
}
