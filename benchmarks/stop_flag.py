"""Cost of a step's verdict (`guard.StepGuard.judge`: the stop-signal agreement and the
bad-step check in one 3-number MAX all-reduce and one read) against a training step.

Two gloo processes on CPU, each 1 thread. Each times the verdict over many calls (no
signal pending, a finite step, as in almost every step) and the dp_shard 2 training
step of benchmarks/parallel_overhead.py, in the same run, and prints one JSON object
with the ratio. On NCCL the read also synchronises the host with the GPU once per step,
before the optimizer; its cost there has not been measured yet.
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
from parallel_overhead import step_times

from causeway.config.schema import TrainConfig
from causeway.train.faults import Faults
from causeway.train.guard import StepGuard
from causeway.train.stop import StopSignals


def flag_times(calls: int) -> list[float]:
    # No signal handlers, no faults: only the verdict is timed.
    guard = StepGuard(TrainConfig(), StopSignals([]), torch.device("cpu"), Faults([], 0))
    loss, norm = torch.tensor(2.0), torch.tensor(1.0, dtype=torch.float64)
    for step in range(20):  # warm the connection
        guard.judge(step, loss, norm)
    times = []
    for step in range(calls):
        start = time.perf_counter()
        guard.judge(step, loss, norm)
        times.append(time.perf_counter() - start)
    return times


def worker(rank: int, port: int, calls: int, steps: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )  # fmt: skip
    torch.set_num_threads(1)
    step = step_times(["parallel.dp_shard=2"], steps, warmup=2)  # initialises the group
    flag = flag_times(calls)
    if rank == 0:
        Path(out).write_text(json.dumps({"step": step, "flag": flag}))
    torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        mp.start_processes(worker, args=(port, args.calls, args.steps, out), nprocs=2,
                           start_method="spawn")  # fmt: skip
        times = json.loads(Path(out).read_text())
    flag, step = statistics.median(times["flag"]), statistics.median(times["step"])
    p99 = sorted(times["flag"])[int(0.99 * args.calls)]
    print(json.dumps({
        "benchmark": "stop_flag",
        "device": "cpu, gloo, 2 processes x 1 thread",
        "verdict_us": {"median": round(flag * 1e6, 1), "p99": round(p99 * 1e6, 1)},
        "step_s": round(step, 4),
        "verdict_over_step": round(flag / step, 6),
        "calls": args.calls,
        "steps": args.steps,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
