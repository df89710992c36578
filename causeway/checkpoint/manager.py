"""Resumable checkpoints during training: save every N steps, keep the newest K, resume.

The commit rule: a checkpoint counts only once RUN_DIR/checkpoints/step_N/COMMITTED
exists. Rank 0 writes it last, after every rank has written its shards (a barrier for
synchronous saves; the save's future for asynchronous ones, whose metadata is written
only once every rank's data is) and the files are fsynced. `resume: auto` takes the
newest committed checkpoint and names the partial ones it skips.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from causeway.checkpoint.commit import (
    is_committed,
    mark_committed,
    start_checkpoint,
    write_checkpoint,
)
from causeway.checkpoint.discovery import newest_committed, resolve_checkpoint, step_dirs
from causeway.checkpoint.ranks import is_main, quiet_single_process
from causeway.checkpoint.training_state import check_compatible, training_state
from causeway.config import RunConfig


class Checkpointer:
    def __init__(self, cfg: RunConfig, run_dir: Path, pm, optimizer, stream, meta: dict):
        self.cfg, self.run_dir, self.pm, self.optimizer = cfg, Path(run_dir), pm, optimizer
        self.stream, self.meta = stream, meta
        self.pending: tuple[int, Path, Future] | None = None
        self.committed: list[tuple[int, Path]] = []  # since the last take_committed()

    def state(self, step: int) -> dict:
        # Every rank's readers (a gather over data-parallel ranks): any layout can resume it.
        stream, group = self.stream, self.pm.group("dp")
        data = stream.global_state_dict(group) if stream is not None else None
        return training_state(self.pm.parts, self.optimizer, step, data)

    def save(self, step: int) -> Path:
        """Save step `step`; asynchronously when checkpoint.async_save is set."""
        self.wait()
        out = self.run_dir / "checkpoints" / f"step_{step}"
        state = self.state(step)
        if not self.cfg.checkpoint.async_save:
            write_checkpoint(out, step, self.cfg, state, self.meta)
            self.committed.append((step, out))
            self.prune()
            return out
        start_checkpoint(out, step, self.cfg, self.meta)
        with quiet_single_process():
            self.pending = (step, out, dcp.async_save(state, checkpoint_id=str(out)))
        return out

    def poll(self) -> None:
        """Commit an asynchronous save once it has finished (called every step)."""
        if self.pending is not None and self.pending[2].done():
            self.wait()

    def wait(self) -> None:
        """Finish a pending asynchronous save: its metadata is written only after every
        rank's data, so its completion on rank 0 means the whole checkpoint is there."""
        if self.pending is None:
            return
        step, out, future = self.pending
        self.pending = None
        future.result()
        mark_committed(out, step)
        self.committed.append((step, out))
        self.prune()

    def take_committed(self) -> list[tuple[int, Path]]:
        """The checkpoints committed since the last call, oldest first."""
        taken, self.committed = self.committed, []
        return taken

    def prune(self) -> None:
        """Keep the newest `checkpoint.keep` committed checkpoints (0 keeps all)."""
        if not is_main():
            return
        keep = self.cfg.checkpoint.keep
        committed = [p for _, p in step_dirs(self.run_dir) if is_committed(p)]
        for path in committed[:-keep] if keep > 0 else []:
            shutil.rmtree(path, ignore_errors=True)

    def resume(self) -> int:
        """Load the checkpoint named by checkpoint.resume; returns the step to continue from."""
        choice = self.cfg.checkpoint.resume
        if choice == "none":
            return 0
        if choice == "auto":
            source = newest_committed(self.run_dir)
            if source is None:
                return 0
        else:
            source = resolve_checkpoint(choice)
        return self.load(source)

    def load(self, source: Path) -> int:
        state = self.state(0)
        check_compatible(source, state["model"], whole_model=self.pm.dims.pp == 1)
        with quiet_single_process():
            dcp.load(state, checkpoint_id=str(source))
        for part in self.pm.parts:
            set_model_state_dict(part, state["model"], options=StateDictOptions(strict=False))
        torch.set_rng_state(state["rng"])
        if self.stream is not None and "data" in state:
            self.stream.load_state_dict(state["data"])
        step = int(state["step"])
        if is_main():
            print(f"causeway: resumed from {source} at step {step}", flush=True)
        return step
