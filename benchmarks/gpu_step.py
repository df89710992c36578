"""Training-step throughput and MFU of a ~1B decoder on one GPU (bf16, FSDP on one rank).

For causal and prefix visibility over packed documents, for every available attention
backend (flash, flex, sdpa), with activation checkpointing off and on. Prints one JSON
object. Goals on an H100: MFU >= 45% causal; prefix within 5% of causal.

    python benchmarks/gpu_step.py               # the ~1B model, within ~8 minutes
    python benchmarks/gpu_step.py --smoke       # tiny model; also runs on CPU (sdpa)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist

from causeway.config import load_config
from causeway.models import build_model
from causeway.models.flash import available as flash_available
from causeway.models.flops import count_parameters, flops_per_token
from causeway.parallel.activation_checkpoint import apply_activation_checkpointing
from causeway.parallel.fsdp import apply_fsdp, mixed_precision

MODEL_1B = [
    "model.d_model=2048", "model.n_layers=18", "model.n_heads=16", "model.d_ff=5632",
    "model.vocab_size=32128", "model.max_seq_len=2048", "data.seq_len=2048",
]  # fmt: skip
SMOKE = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.d_ff=128",
    "model.vocab_size=512", "model.max_seq_len=128", "data.seq_len=128",
]  # fmt: skip
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def packed_batch(batch: int, seq: int, vocab: int, device, seed: int = 0) -> dict:
    """Rows of several documents (lengths 64..seq/2) with random prefix lengths."""
    g = torch.Generator().manual_seed(seed)
    segments = torch.zeros(batch, seq, dtype=torch.int32)
    positions = torch.zeros(batch, seq, dtype=torch.long)
    max_docs = seq // 64 + 2
    prefix = torch.zeros(batch, max_docs, dtype=torch.long)
    for row in range(batch):
        start, doc = 0, 1
        while start < seq:
            length = min(int(torch.randint(64, max(65, seq // 2), (1,), generator=g)), seq - start)
            segments[row, start : start + length] = doc
            positions[row, start : start + length] = torch.arange(length)
            prefix[row, doc] = int(torch.randint(1, max(2, length), (1,), generator=g))
            start, doc = start + length, doc + 1
    tokens = torch.randint(0, vocab, (batch, seq), generator=g)
    out = {
        "tokens": tokens, "targets": tokens.roll(-1, 1),
        "loss_mask": torch.ones_like(tokens, dtype=torch.bool),
        "segment_ids": segments, "positions": positions, "prefix_lengths": prefix,
    }  # fmt: skip
    return {k: v.to(device) for k, v in out.items()}


def build(cfg, device, checkpointing: bool):
    model = build_model(cfg.model, "meta")
    apply_activation_checkpointing(model, "full" if checkpointing else "none")
    if dist.is_initialized():
        mesh = torch.distributed.device_mesh.init_device_mesh(device.type, (1,))
        apply_fsdp(model, mesh, mixed_precision("bf16", device.type))
    model.to_empty(device=device)
    model.init_weights()
    return model


def measure(cfg, device, batch, checkpointing: bool, steps: int, warmup: int) -> float:
    model = build(cfg, device, checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            inputs = {k: batch[k] for k in ("tokens", "positions", "segment_ids", "prefix_lengths")}
            sums = model(**inputs, targets=batch["targets"], loss_mask=batch["loss_mask"])
        sums.total(sums.tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return sorted(times)[len(times) // 2]


def backends(device) -> list[str]:
    found = ["sdpa"]
    if device.type == "cuda":
        found.insert(0, "flex")
        if flash_available():
            found.insert(0, "flash")
    return found


def init_single_rank(device) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    init_single_rank(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0) * 1e12
    results = []
    for visibility in ("causal", "prefix"):
        cfg = load_config(
            "tiny-nd-plm", [*(SMOKE if args.smoke else MODEL_1B), f"model.visibility={visibility}"]
        )
        batch = packed_batch(args.batch, cfg.data.seq_len, cfg.model.vocab_size, device)
        fpt = flops_per_token(cfg.model, cfg.data.seq_len)
        for backend in backends(device):
            cfg.model.attention = backend
            for checkpointing in (False, True):
                step = measure(cfg, device, batch, checkpointing, args.steps, args.warmup)
                tokens_per_s = args.batch * cfg.data.seq_len / step
                results.append({
                    "visibility": visibility, "attention": backend,
                    "activation_checkpointing": checkpointing, "step_s": round(step, 4),
                    "tokens_per_s": round(tokens_per_s, 1),
                    "mfu": round(fpt * tokens_per_s / peak, 4) if peak else None,
                })  # fmt: skip
    params = count_parameters(build_model(cfg.model, "meta"))
    report = {"benchmark": "gpu_step", "device": name, "parameters": params, "results": results}
    report["prefix_over_causal"] = prefix_ratios(results)
    print(json.dumps(report, indent=2))
    dist.destroy_process_group()


def prefix_ratios(results: list[dict]) -> dict[str, float]:
    """Step time of prefix over causal for each (backend, checkpointing)."""
    key = lambda r: (r["attention"], r["activation_checkpointing"])  # noqa: E731
    causal = {key(r): r["step_s"] for r in results if r["visibility"] == "causal"}
    return {
        f"{a}{'+ac' if c else ''}": round(r["step_s"] / causal[(a, c)], 3)
        for r in results
        if r["visibility"] == "prefix"
        for (a, c) in [key(r)]
    }


if __name__ == "__main__":
    main()
