"""The end-of-run checkpoint: model weights keyed by single-device names, any layout.

Layout: RUN_DIR/checkpoints/step_N/ holds the torch.distributed.checkpoint (DCP) files
of the model, `config.yaml`, `meta.json` and, written last, `COMMITTED`. Every rank
writes its own shards; rank 0 writes the marker only after a barrier, once every file
is fsynced, so a crash mid-save never leaves a directory that reads as complete. Being
keyed by parameter names, a checkpoint saved under one layout loads under any other.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from causeway.config import RunConfig, dump_yaml

COMMIT_MARKER = "COMMITTED"


def fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())


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


def model_state(parts: list[nn.Module]) -> dict:
    """The union of the parts' state dicts, keyed by single-device names."""
    state = {}
    for part in parts:
        state.update(get_model_state_dict(part))
    return state


def start_checkpoint(out: Path, step: int, config: RunConfig, meta: dict | None) -> None:
    """A fresh, uncommitted step directory with config.yaml and meta.json (rank 0)."""
    if is_main():
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / "config.yaml").write_text(dump_yaml(config))
        (out / "meta.json").write_text(json.dumps({"step": step, "format": 1, **(meta or {})}))
    barrier()


def mark_committed(out: Path, step: int) -> None:
    """Rank 0 writes COMMITTED last, once every file of the checkpoint is on disk."""
    if is_main():
        fsync_tree(out)
        marker = out / COMMIT_MARKER
        marker.write_text(f"{step}\n")
        with marker.open("rb") as handle:
            os.fsync(handle.fileno())


def write_checkpoint(
    out: Path, step: int, config: RunConfig, state: dict, meta: dict | None = None
) -> Path:
    """Save `state` with DCP into `out` and commit it (the synchronous commit rule)."""
    start_checkpoint(out, step, config, meta)
    with quiet_single_process():
        dcp.save(state, checkpoint_id=str(out))
    fsync_tree(out)
    barrier()
    mark_committed(out, step)
    barrier()
    return out


def save_final(
    run_dir: Path,
    step: int,
    config: RunConfig,
    parts: list[nn.Module],
    extra: dict | None = None,
    meta: dict | None = None,
) -> Path:
    """Save the parts' weights (and `extra` state, e.g. {"data": stream state}) as step N;
    `meta` (layout, provenance) goes into meta.json."""
    out = Path(run_dir) / "checkpoints" / f"step_{step}"
    state = {"model": model_state(parts), **(extra or {})}
    return write_checkpoint(out, step, config, state, meta)


def load_state(checkpoint: Path, template: dict) -> dict:
    """Fill `template` (e.g. {"data": stream.state_dict()}) from a committed checkpoint."""
    if not is_committed(checkpoint):
        raise RuntimeError(f"{checkpoint} has no {COMMIT_MARKER} marker: it is partial")
    with quiet_single_process():
        dcp.load(template, checkpoint_id=str(checkpoint))
    return template


def is_committed(checkpoint: Path) -> bool:
    return (Path(checkpoint) / COMMIT_MARKER).is_file()


def load_model_weights(
    checkpoint: Path,
    parts: list[nn.Module] | nn.Module,
    whole_model: bool = True,
    allow_partial: bool = False,
) -> None:
    """Load a committed checkpoint's weights into the parts (any layout); `whole_model`
    False for pipeline stages, which hold only some of the checkpoint's tensors."""
    checkpoint = Path(checkpoint)
    if not is_committed(checkpoint) and not allow_partial:
        raise RuntimeError(f"{checkpoint} has no {COMMIT_MARKER} marker: it is partial")
    from causeway.checkpoint.training_state import check_compatible

    parts = [parts] if isinstance(parts, nn.Module) else parts
    state = {"model": model_state(parts)}
    check_compatible(checkpoint, state["model"], whole_model)
    with quiet_single_process():
        dcp.load(state, checkpoint_id=str(checkpoint))
    for part in parts:
        set_model_state_dict(part, state["model"], options=StateDictOptions(strict=False))
