"""Process-group set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(
    device_name: str, timeout_s: float | None = None, dump_dir: Path | None = None
) -> DistEnv:
    """Join the process group when launched by torchrun; use the one that exists when the
    launcher made it (Ray Train); one process otherwise.

    `timeout_s` bounds every collective: a rank whose peer hangs or is gone fails after
    it instead of waiting forever. Under NCCL the flight recorder keeps the last
    collectives of each rank and dumps them into `dump_dir` on a timeout.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        device = pick_device(device_name, local_rank)
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl" and dump_dir is not None:
            enable_flight_recorder(Path(dump_dir))
        dist.init_process_group(
            backend,
            device_id=device if device.type == "cuda" else None,
            timeout=timedelta(seconds=timeout_s) if timeout_s else None,
        )
    return DistEnv(rank, world, local_rank, device)


def enable_flight_recorder(dump_dir: Path) -> None:
    """torch's NCCL flight recorder, unless the user set it up: dumps on a timeout into
    dump_dir/rank_N (read them with `torch.distributed.flight_recorder` tools)."""
    dump_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000")
    os.environ.setdefault("TORCH_NCCL_DUMP_ON_TIMEOUT", "1")
    os.environ.setdefault("TORCH_FR_DUMP_TEMP_FILE", str(dump_dir / "rank_"))


def all_reduce_sum(tensor: torch.Tensor, group) -> torch.Tensor:
    if group is not None:
        dist.all_reduce(tensor, group=group)
    return tensor
