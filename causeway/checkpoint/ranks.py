"""Which process does what around a checkpoint: one process or a process group alike.

Rank 0 (or the only process) writes what is written once; barriers wait for every rank
and do nothing without a process group.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch.distributed as dist


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


@contextmanager
def quiet_single_process():
    """DCP warns that it assumes one process when no process group exists; we mean it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def rank_and_world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order (a collective); [obj] without a process group."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
