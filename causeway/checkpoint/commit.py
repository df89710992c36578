"""The commit protocol: data files first, the marker last.

A checkpoint is a directory RUN_DIR/checkpoints/step_N/ holding the
torch.distributed.checkpoint (DCP) files, `config.yaml`, `meta.json` and, written last,
`COMMITTED`. Saving is three moves: `start_checkpoint` makes a fresh directory with
config.yaml and meta.json; every rank writes its own shards; once every rank's files are
written and fsynced (a barrier for synchronous saves, the completed save for
asynchronous ones), rank 0 writes and fsyncs the marker (`mark_committed`).

The rule for readers: a directory without the marker is never loaded as complete.
`load_state` and `weights.load_model_weights` refuse it unless a partial checkpoint is
asked for explicitly, and `discovery.py` skips it when it picks a run's newest
checkpoint. The marker is the commit record (`integrity.py`): each file's size, checked
at every load, and checksum, checked on request. A crash mid-save therefore leaves a
partial directory, never one that reads as complete. Being keyed by single-device
parameter names, a checkpoint saved under one layout loads under any other.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch import nn

from causeway.checkpoint.integrity import COMMIT_MARKER, check_sizes, write_record
from causeway.checkpoint.ranks import barrier, is_main, quiet_single_process
from causeway.checkpoint.training_state import model_state
from causeway.config import RunConfig, dump_yaml


def fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with file.open("rb") as handle:
                os.fsync(handle.fileno())


def start_checkpoint(out: Path, step: int, config: RunConfig, meta: dict | None) -> None:
    """A fresh, uncommitted step directory with config.yaml and meta.json (rank 0)."""
    if is_main():
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / "config.yaml").write_text(dump_yaml(config))
        (out / "meta.json").write_text(json.dumps({"step": step, "format": 1, **(meta or {})}))
    barrier()


def mark_committed(out: Path, step: int) -> dict | None:
    """Rank 0 writes COMMITTED last, once every file of the checkpoint is on disk: the
    commit record (`integrity.py`: each file's size and CRC32, read as it is fsynced),
    renamed into place whole. Returns the record (None on other ranks)."""
    if is_main():
        return write_record(out, step)
    return None


def write_checkpoint(
    out: Path,
    step: int,
    config: RunConfig,
    state: dict,
    meta: dict | None = None,
    before_commit: Callable[[], None] | None = None,
) -> Path:
    """Save `state` with DCP into `out` and commit it (the synchronous commit rule).
    `before_commit` runs on every rank once the data files are written (test faults)."""
    start_checkpoint(out, step, config, meta)
    with quiet_single_process():
        dcp.save(state, checkpoint_id=str(out))
    fsync_tree(out)
    if before_commit is not None:
        before_commit()
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


def is_committed(checkpoint: Path) -> bool:
    return (Path(checkpoint) / COMMIT_MARKER).is_file()


def require_committed(checkpoint: Path) -> None:
    """Refuse a directory without the marker: it is partial, never complete."""
    if not is_committed(checkpoint):
        raise RuntimeError(f"{checkpoint} has no {COMMIT_MARKER} marker: it is partial")


def load_state(checkpoint: Path, template: dict) -> dict:
    """Fill `template` (e.g. {"data": stream.state_dict()}) from a committed checkpoint
    (its files' sizes checked against the commit record)."""
    require_committed(checkpoint)
    check_sizes(checkpoint)
    with quiet_single_process():
        dcp.load(template, checkpoint_id=str(checkpoint))
    return template
