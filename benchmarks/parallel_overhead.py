"""Cost of tensor and sharded data parallelism on CPU with gloo, against one process.

The model of benchmarks/model_step.py (d_model 512, 8 layers, 8 heads, ffn 1376, vocab
8192, tied embeddings, batch 8 x 256, fp32). One process uses 2 threads; each of the 2
gloo processes uses 1 thread, so all runs use the machine's 2 cores. Communicated bytes
are counted from the layout (what each rank sends per step), not sniffed from the wire.
This documents the cost model on CPU; it has no goal. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from causeway.config import load_config
from causeway.models.flops import count_parameters

SHAPE = [
    "model.d_model=512", "model.n_layers=8", "model.n_heads=8", "model.d_ff=1376",
    "model.vocab_size=8192", "model.max_seq_len=256", "data.seq_len=256",
    "data.batch_size=8", "data.micro_batch_size=4", "train.precision=fp32",
]  # fmt: skip
LAYOUTS = {"one_process": [], "tp2": ["parallel.tp=2", "parallel.dp_shard=1"], "dp_shard2": []}


def synthetic_batch(cfg) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (cfg.data.batch_size, cfg.data.seq_len)
    tokens = torch.randint(0, cfg.model.vocab_size, shape, generator=g)
    return {
        "tokens": tokens,
        "targets": tokens.roll(-1, 1),
        "loss_mask": torch.ones(shape, dtype=torch.bool),
    }


def step_times(overrides: list[str], steps: int, warmup: int) -> list[float]:
    from causeway.train.distributed import init_distributed
    from causeway.train.optim import build_optimizer
    from causeway.train.step import StepSettings, train_step
    from causeway.train.trainer import build_parallel_model

    cfg = load_config("tiny-cd-flm", [*SHAPE, *overrides])
    env = init_distributed("cpu")
    pm = build_parallel_model(cfg, env)
    optimizer = build_optimizer(cfg.optimizer, list(pm.parameters()))
    batch = synthetic_batch(cfg)
    settings = StepSettings("decoder", cfg.data.micro_batch_size, 0.0, 1.0, "fp32", env.device)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        train_step(pm, optimizer, batch, settings)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def worker(rank: int, world: int, port: int, overrides, steps, warmup, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )  # fmt: skip
    torch.set_num_threads(1)
    times = step_times(overrides, steps, warmup)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    torch.distributed.destroy_process_group()


def distributed_times(overrides: list[str], steps: int, warmup: int) -> list[float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        args = (2, port, overrides, steps, warmup, out)
        mp.start_processes(worker, args=args, nprocs=2, start_method="spawn")
        return json.loads(Path(out).read_text())


def communicated_bytes(layout: str) -> int:
    """Bytes one rank sends per step (ring algorithms, world size 2)."""
    from causeway.models import build_model

    cfg = load_config("tiny-cd-flm", SHAPE)
    params = count_parameters(build_model(cfg.model, "meta")) * 4
    if layout == "dp_shard2":
        # all-gather in forward and in backward, reduce-scatter of gradients: half each.
        return 3 * params // 2
    if layout == "tp2":
        d, m = cfg.data, cfg.model
        activation = d.batch_size * d.seq_len * m.d_model * 4
        # Per block, forward and backward: 2 all-gathers + 2 reduce-scatters of the
        # sequence-parallel activations, half of each sent; plus the head's gather.
        per_block = 2 * 4 * activation // 2
        return m.n_layers * per_block + 2 * activation // 2
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {"one_process": statistics.median(step_times([], args.steps, args.warmup))}
    results["tp2"] = statistics.median(distributed_times(LAYOUTS["tp2"], args.steps, args.warmup))
    results["dp_shard2"] = statistics.median(
        distributed_times(["parallel.dp_shard=2"], args.steps, args.warmup)
    )
    base = results["one_process"]
    print(json.dumps({
        "benchmark": "parallel_overhead",
        "device": "cpu, gloo, 2 cores",
        "step_s": {k: round(v, 4) for k, v in results.items()},
        "tp2_over_one_process": round(results["tp2"] / base, 3),
        "dp_shard2_over_one_process": round(results["dp_shard2"] / base, 3),
        "sent_bytes_per_rank_per_step": {k: communicated_bytes(k) for k in results},
        "steps": args.steps,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
