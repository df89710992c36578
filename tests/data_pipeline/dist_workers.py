"""Functions run in each rank of `tests.parallel.harness.run_distributed` (gloo on CPU)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from causeway.data_pipeline.stream import DataStream

from .stream_helpers import take


def read_then_gather_state(data_dir: str, steps: int, args: dict) -> dict:
    """Read `steps` batches on this rank, then gather every rank's state (a collective)."""
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    stream = DataStream(Path(data_dir), rank=rank, world_size=world_size, **args)
    batches = take(stream, steps)
    return {
        "state": stream.global_state_dict(),
        "provenance": [b["provenance"][:, 1].tolist() for b in batches],
    }
