"""Functions run in each rank of `tests.parallel.harness.run_distributed` (gloo on CPU)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from causeway.checkpoint.discovery import newest_intact


def choose_with_verify(run_dir: str) -> dict:
    """Each rank checksums its share of the files; all must agree on the fallback."""
    dist.init_process_group("gloo")
    chosen, corrupt = newest_intact(Path(run_dir), verify=True)
    return {"chosen": chosen.name, "corrupt": [p.name for p in corrupt]}
