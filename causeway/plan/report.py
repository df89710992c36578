"""`causeway plan`: what a layout costs per GPU, before any GPU is involved.

The real model is built on the meta device and the trainer's own layout code is applied
to it (pipeline split, tensor parallel, activation checkpointing, FSDP) under a fake process
group of the requested world size: no collective runs and no memory is allocated. The
local shards of that model give each pipeline rank's parameter, gradient and optimizer
bytes; `memory.py` adds activations and working buffers, `hardware.py` the GPU figures,
`step_time.py` the step-time model in parts and the MFU it implies.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from causeway.config import ConfigError, RunConfig, load_config
from causeway.models import build_model
from causeway.models.flops import causal_attention_saving, count_parameters
from causeway.parallel.apply import apply_layout
from causeway.parallel.dims import ParallelDims
from causeway.parallel.pipeline import build_pipeline, make_stage, stage_ids
from causeway.plan.hardware import GPU, LINK_EFFICIENCY, MEMORY_EFFICIENCY, gpu_spec
from causeway.plan.memory import (
    FP32,
    RankShape,
    activation_bytes,
    buffer_bytes,
    micro_batches,
    optimizer_floats,
    sequence_lengths,
)
from causeway.plan.step_time import ASSUMPTIONS, EXPOSED, step_estimate

HEADROOM = 0.10  # of GPU memory left for the allocator's fragmentation, NCCL, CUDA context
GIB = 2**30
COMPONENTS = ("parameters", "gradients", "optimizer", "activations", "buffers")


@contextmanager
def fake_world(size: int) -> Iterator[None]:
    """A default process group of `size` ranks (this process is rank 0) with no comms."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("causeway plan needs its own process group; one already exists")
    dist.init_process_group("fake", rank=0, world_size=size, store=FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_numel(p: torch.Tensor) -> int:
    return (p.to_local() if isinstance(p, DTensor) else p).numel()


def measure(parts: list[nn.Module], ids: list[int], pp_rank: int, n_stages: int, optim: str):
    """Local elements of what one pipeline rank holds, after the layout was applied."""
    shape = RankShape(pp_rank, stages=ids, has_head=n_stages - 1 in ids)
    for part in parts:
        in_blocks: set[int] = set()
        for stack in ("encoder_layers", "layers"):
            blocks = list((getattr(part, stack, None) or {}).values())
            if stack == "layers":
                shape.decoder_layers += len(blocks)
            else:
                shape.encoder_layers += len(blocks)
            for block in blocks:
                params = list(block.parameters())
                in_blocks.update(id(p) for p in params)
                size = sum(local_numel(p) for p in params)
                shape.largest_block = max(shape.largest_block, size)
        unique = {id(p): p for p in part.parameters()}
        for key, p in unique.items():
            n = local_numel(p)
            shape.parameters += n
            shape.optimizer_floats += optimizer_floats(optim, n, tuple(p.shape))
            if key not in in_blocks:
                shape.root += n
    return shape


def measure_ranks(cfg: RunConfig, dims: ParallelDims) -> list[RankShape]:
    """Every pipeline rank's share, from the real plan applied to the meta model."""
    cpu, optim, p = torch.device("cpu"), cfg.optimizer.name, cfg.parallel
    with fake_world(dims.world_size):
        mesh = dims.build_mesh("cpu").root
        model = build_model(cfg.model, "meta")
        if dims.pp == 1:
            apply_layout(model, cfg, dims, mesh, cpu)
            return [measure([model], [0], 0, 1, optim)]
        try:
            first, _, n_stages = build_pipeline(model, mesh["pp"], p.virtual_stages, p.pp_schedule)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        ranks = []
        for rank in range(dims.pp):
            ids = stage_ids(rank, dims.pp, p.virtual_stages)
            parts = first if rank == 0 else [make_stage(model, i, n_stages) for i in ids]
            for part in parts:
                apply_layout(part, cfg, dims, mesh, cpu)
            ranks.append(measure(parts, ids, rank, n_stages, optim))
        return ranks


def rank_bytes(cfg: RunConfig, dims: ParallelDims, rank: RankShape) -> dict[str, int]:
    acts = {
        mode: activation_bytes(cfg, dims.tp, dims.pp, dims.dp, rank, mode)
        for mode in {"none", "full", cfg.parallel.activation_checkpoint}
    }
    out = {
        "parameters": rank.parameters * FP32,  # fp32 master weights
        "gradients": rank.parameters * FP32,
        "optimizer": rank.optimizer_floats * FP32,
        "activations": acts["none"],
        "activations_checkpointed": acts["full"],
        "buffers": buffer_bytes(cfg, dims.dp, dims.dp_shard, dims.pp, dims.tp, rank),
    }
    if cfg.parallel.activation_checkpoint == "every_k":
        out["activations_every_k"] = acts["every_k"]
    used = acts[cfg.parallel.activation_checkpoint]
    out["total"] = sum(out[k] for k in COMPONENTS if k != "activations") + used
    return out


def plan(cfg: RunConfig, gpus: int, gpu: str = "h100") -> dict:
    """The report of `cfg` on `gpus` GPUs of kind `gpu`; raises ConfigError if invalid."""
    spec = gpu_spec(gpu)
    if gpus < 1:
        raise ConfigError(f"--gpus must be >= 1, got {gpus}")
    dims = ParallelDims.from_config(cfg, gpus)
    ranks = measure_ranks(cfg, dims)
    per_rank = [rank_bytes(cfg, dims, rank) for rank in ranks]
    worst = max(range(len(ranks)), key=lambda r: per_rank[r]["total"])
    estimate = step_estimate(cfg, dims, spec, ranks)
    tokens = tokens_per_step(cfg)
    usable = int(spec.memory_bytes * (1 - HEADROOM))
    p = cfg.parallel
    report = {
        "recipe": cfg.name,
        "gpu": spec.name,
        "gpus": gpus,
        "parameters": count_parameters(build_model(cfg.model, "meta")),
        "optimizer": cfg.optimizer.name,
        "layout": {
            "dp_replicate": dims.dp_replicate,
            "dp_shard": dims.dp_shard,
            "tp": dims.tp,
            "pp": dims.pp,
            "virtual_stages": dims.virtual_stages,
            "pp_schedule": p.pp_schedule if dims.pp > 1 else None,
            "micro_batch_size": cfg.data.micro_batch_size,
            "micro_batches": micro_batches(cfg, dims.dp),
            "activation_checkpoint": p.activation_checkpoint,
        },
        "pipeline_rank": worst,
        "bytes_per_rank": per_rank[worst],
        "per_pipeline_rank": [
            {
                "stages": rank.stages,
                "parameter_count": rank.parameters,
                "parameter_bytes": b["parameters"],
                "total_bytes": b["total"],
            }
            for rank, b in zip(ranks, per_rank, strict=True)
        ],  # fmt: skip
        # Each checkpointing mode's activations on the rank where that mode needs most.
        "activations_by_mode": activations_by_mode(cfg, per_rank),
        "capacity_bytes": spec.memory_bytes,
        "usable_bytes": usable,
        "flops_per_token": estimate["flops_per_step"] / tokens,
        "flops_per_step": estimate["flops_per_step"],
        "tokens_per_step": tokens,
        "peak_tflops": spec.peak_tflops,
        "step_time_s_estimate": round(estimate["step_time_s"], 4),
        "mfu_estimate": round(estimate["mfu"], 4),
        "step_time_parts_s": estimate["parts_s"],
        "step_time_shares": estimate["shares"],
        "slowest_pipeline_rank": estimate["slowest_pipeline_rank"],
        "assumptions": {
            **ASSUMPTIONS,
            "link_efficiency": LINK_EFFICIENCY,
            "memory_efficiency": MEMORY_EFFICIENCY,
            "memory_headroom": HEADROOM,
            **labelled_assumptions(cfg, dims, spec),
        },
        "mfu_estimate_megatron_convention": round(megatron_mfu(cfg, estimate), 4),
        **per_target_token(cfg, estimate["flops_per_step"]),
        "fits": per_rank[worst]["total"] <= usable,
    }
    report["overflow"] = None if report["fits"] else overflow_line(report, spec, gpus)
    return report


def tokens_per_step(cfg: RunConfig) -> int:
    """Every position of every row, both sides of an encoder-decoder (as the trainer)."""
    return cfg.data.batch_size * sum(sequence_lengths(cfg))


def labelled_assumptions(cfg: RunConfig, dims: ParallelDims, spec: GPU) -> dict[str, str]:
    """What the figures assume, said in words (text report and JSON alike)."""
    p, arch = cfg.parallel, cfg.model.arch
    precision = ("fp32 throughout" if cfg.train.precision == "fp32" else
                 "bf16 compute; fp32 master weights, gradients and optimizer state")  # fmt: skip
    labels = {
        "flop_convention": (
            "PaLM appendix B, as torchtitan counts: 6 x matmul parameters per token plus "
            "attention over the full T x T square whatever the mask; "
            "mfu_estimate_megatron_convention halves causal self-attention"
        ),
        "precision": precision,
        "attention": (
            f"a flash kernel at {spec.attention_tflops:g} TFLOP/s forward + backward: no "
            "[T, T] scores stored, log-sum-exp kept; masked blocks skipped"
        ),
        "sequence_parallel": (
            "on (tp > 1): residual stream sharded over tp; the normed inputs of the "
            "column-parallel linears are kept all-gathered"
            if dims.tp > 1
            else "off (tp 1)"
        ),
        "activation_checkpoint": (
            p.activation_checkpoint
            if p.activation_checkpoint != "every_k"
            else f"every_k (k {p.activation_checkpoint_every})"
        ),
        "efficiency": (
            f"matmuls from the best measured bf16 rate ({spec.matmul_tflops:g} of "
            f"{spec.peak_tflops:g} TFLOP/s) by shape (wave quantization, short K, memory "
            f"roofline); memory-bound work at {MEMORY_EFFICIENCY:.0%} of "
            f"{spec.memory_gbs:g} GB/s; links at {LINK_EFFICIENCY:.0%} of their rate"
        ),
        "compile": "torch.compile: elementwise work fused" if p.compile else "eager",
    }
    if arch == "encoder_decoder":
        labels["flops_per_token"] = (
            "per input + target token (every position of both sides, as tokens/s counts "
            "them); flops_per_target_token gives the per-target-token figure"
        )
    return labels


def megatron_mfu(cfg: RunConfig, estimate: dict) -> float:
    enc, dec = sequence_lengths(cfg)
    lengths = (dec,) if cfg.model.arch == "decoder" else (enc, dec)
    saved = causal_attention_saving(cfg.model, *lengths) * cfg.data.batch_size
    return estimate["mfu"] * (1 - saved / estimate["flops_per_step"])


def per_target_token(cfg: RunConfig, flops: float) -> dict:
    if cfg.model.arch != "encoder_decoder":
        return {}
    return {"flops_per_target_token": flops / (cfg.data.batch_size * cfg.data.targets_length)}


def activations_by_mode(cfg: RunConfig, per_rank: list[dict]) -> dict:
    keys = {"none": "activations", "full": "activations_checkpointed"}
    if cfg.parallel.activation_checkpoint == "every_k":
        keys["every_k"] = "activations_every_k"
    out = {}
    for mode, key in keys.items():
        rank = max(range(len(per_rank)), key=lambda r: per_rank[r][key])
        out[mode] = {"bytes": per_rank[rank][key], "pipeline_rank": rank}
    return out


def gib(n: float, digits: int = 1) -> str:
    return f"{n / GIB:.{digits}f} GiB"


def overflow_line(report: dict, spec: GPU, gpus: int) -> str:
    """One line: each component in GiB, the total against capacity, and what to change."""
    b, mode = report["bytes_per_rank"], report["layout"]["activation_checkpoint"]
    others = sum(b[k] for k in COMPONENTS if k != "activations")
    used = {k: b[k] for k in COMPONENTS} | {"activations": b["total"] - others}  # configured
    largest = max(used, key=used.get)
    parts = " + ".join(f"{k} {gib(v)}" for k, v in used.items())
    hints = []
    if mode != "full":
        checkpointed = gib(b["activations_checkpointed"])
        hints.append(f"parallel.activation_checkpoint=full (activations {checkpointed})")
    if largest == "activations":
        hints.append("a smaller data.micro_batch_size")
    hints.append("a larger parallel.tp, parallel.pp or parallel.dp_shard")
    usable = gib(report["usable_bytes"])
    return (
        f"{report['recipe']} does not fit {gpus} x {spec.name}: pipeline rank "
        f"{report['pipeline_rank']} needs {parts} = {gib(b['total'])} > {usable} usable "
        f"({spec.memory_gib:.0f} GiB less {HEADROOM:.0%} headroom); largest: {largest}; "
        f"try {', or '.join(hints)}"
    )


def activation_rows(r: dict) -> list[tuple[str, str]]:
    """Each mode's line gives its own worst pipeline rank when that is another one."""
    rows = []
    for mode, words in (("none", "no"), ("full", "full"), ("every_k", "every_k")):
        if mode not in r["activations_by_mode"]:
            continue
        worst = r["activations_by_mode"][mode]
        where = "" if worst["pipeline_rank"] == r["pipeline_rank"] else (
            f" (pipeline rank {worst['pipeline_rank']})")  # fmt: skip
        rows.append((f"  activations, {words} checkpointing", gib(worst["bytes"], 2) + where))
    return rows


def step_rows(r: dict) -> list[tuple[str, str]]:
    """The step's parts, largest first, in seconds and as a share of the step."""
    parts, shares = r["step_time_parts_s"], r["step_time_shares"]
    order = sorted(EXPOSED, key=lambda k: -parts[k])
    rows = [(f"  {k.replace('_', ' ')}", f"{parts[k]:.4g} s ({shares[k]:.1%})") for k in order]
    hidden = parts["fsdp_communication"] - parts["fsdp_exposed"]
    if parts["fsdp_communication"]:
        rows.append(("  fsdp, hidden behind compute", f"{hidden:.4g} s (not in the sum)"))
    return rows


def format_report(r: dict) -> str:
    lay, b = r["layout"], r["bytes_per_rank"]
    pipe = (
        f" ({lay['pp_schedule']}, virtual_stages {lay['virtual_stages']})" if lay["pp"] > 1 else ""
    )
    rows = [
        ("recipe", f"{r['recipe']} on {r['gpus']} x {r['gpu']}"),
        ("layout", f"dp_replicate {lay['dp_replicate']} x dp_shard {lay['dp_shard']} x "
                   f"tp {lay['tp']} x pp {lay['pp']}{pipe}"),
        ("micro-batches", f"{lay['micro_batches']} of {lay['micro_batch_size']} rows per step"),
        ("parameters", f"{r['parameters']:,}"),
        ("FLOPs per token", f"{r['flops_per_token'] / 1e9:.2f} GFLOP"),
        ("tokens per step", f"{r['tokens_per_step']:,}"),
        (f"per rank (pipeline rank {r['pipeline_rank']})", ""),
        ("  parameters (fp32)", gib(b["parameters"], 2)),
        ("  gradients (fp32)", gib(b["gradients"], 2)),
        (f"  optimizer state ({r['optimizer']})", gib(b["optimizer"], 2)),
        *activation_rows(r),
        ("  buffers (FSDP gathers, loss)", gib(b["buffers"], 2)),
        (f"  total (checkpointing {lay['activation_checkpoint']})",
         f"{gib(b['total'], 2)} of {gib(r['usable_bytes'], 2)} usable: "
         + ("fits" if r["fits"] else "DOES NOT FIT")),
        ("step time (estimate)", f"{r['step_time_s_estimate']:.4g} s, pipeline rank "
         f"{r['slowest_pipeline_rank']} (the slowest)"),
        *step_rows(r),
        ("MFU (estimate)", f"{r['mfu_estimate']:.1%} of {r['peak_tflops']:.0f} TFLOP/s bf16 peak"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k:<{width}}{v}".rstrip() for k, v in rows]
    lines.append(
        f"{'MFU, Megatron-LM convention':<{width}}"
        f"{r['mfu_estimate_megatron_convention']:.1%} (causal attention halved)"
    )
    if "flops_per_target_token" in r:
        lines.append(
            f"{'FLOPs per target token':<{width}}{r['flops_per_target_token'] / 1e9:.2f} GFLOP"
        )
    lines.append("assumptions:")
    labels = {k: v for k, v in r["assumptions"].items() if isinstance(v, str)}
    lines += [f"  {key}: {value}" for key, value in labels.items()]
    return "\n".join(lines)


def main_plan(recipe: str, gpus: int, gpu: str, overrides: list[str], as_json: bool) -> int:
    """`causeway plan`: print the report and return 0, or one line to stderr and 2."""
    try:
        report = plan(load_config(recipe, overrides), gpus, gpu)
    except ConfigError as err:
        print(f"causeway plan: {err}", file=sys.stderr)
        return 2
    # A layout that does not fit still shows its figures: the exit status says it fails.
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    if not report["fits"]:
        print(f"causeway plan: {report['overflow']}", file=sys.stderr)
        return 2
    return 0
