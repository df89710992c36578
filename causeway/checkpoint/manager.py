"""Resumable checkpoints during training: save every N steps, keep the newest K, resume.

The commit rule: a checkpoint counts only once RUN_DIR/checkpoints/step_N/COMMITTED
exists. Rank 0 writes it last, after every rank has written its shards (a barrier for
synchronous saves; the save's future for asynchronous ones, whose metadata is written
only once every rank's data is) and the files are fsynced. `resume: auto` takes the
newest committed checkpoint whose files match its commit record, and names the partial
and corrupt ones it skips.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from causeway.checkpoint.commit import (
    is_committed,
    mark_committed,
    start_checkpoint,
    write_checkpoint,
)
from causeway.checkpoint.discovery import newest_intact, resolve_checkpoint, step_dirs
from causeway.checkpoint.integrity import check_intact, set_aside
from causeway.checkpoint.ranks import barrier, is_main, quiet_single_process
from causeway.checkpoint.training_state import (
    check_compatible,
    fit_guard_state,
    tensor_table,
    training_state,
)
from causeway.config import RunConfig
from causeway.train.failures import SaveFailed
from causeway.train.faults import Faults


class Checkpointer:
    def __init__(
        self, cfg: RunConfig, run_dir: Path, pm, optimizer, stream, meta: dict, faults=None,
        guard=None,
    ):  # fmt: skip
        self.cfg, self.run_dir, self.pm, self.optimizer = cfg, Path(run_dir), pm, optimizer
        self.stream, self.meta = stream, meta
        self.guard = guard  # train/guard.py StepGuard: its counts resume with the run
        self.faults: Faults | None = faults  # test faults (train/faults.py), else None
        # An asynchronous save runs its collectives in a background thread: on the
        # training's process group they would interleave with the step's and mismatch
        # (gloo aborts), so it gets a group of its own (every rank creates it, here).
        self.save_group = None
        if cfg.checkpoint.async_save and dist.is_initialized():
            self.save_group = dist.new_group(backend="gloo")
        self.pending: tuple[int, Path, Future] | None = None
        self.committed: list[tuple[int, Path]] = []  # since the last take_committed()

    def state(self, step: int) -> dict:
        # Every rank's readers (a gather over data-parallel ranks): any layout can resume it.
        stream, group = self.stream, self.pm.group("dp")
        data = stream.global_state_dict(group) if stream is not None else None
        guard = self.guard.state_dict() if self.guard is not None else None
        return training_state(self.pm.parts, self.optimizer, step, data, guard)

    def save(self, step: int) -> Path:
        """Save step `step`; asynchronously when checkpoint.async_save is set. A save that
        fails raises `SaveFailed`, after removing its partial directory: the newest
        committed checkpoint is untouched, and pruning happens only after a commit."""
        self.wait()
        out = self.run_dir / "checkpoints" / f"step_{step}"
        state = self.state(step)
        in_save = partial(self.faults.in_save, step, self.run_dir) if self.faults else None
        if not self.cfg.checkpoint.async_save:
            with self.failing_save(step, out):
                write_checkpoint(out, step, self.cfg, state, self.meta, before_commit=in_save)
            self.committed.append((step, out))
            self.prune()
            return out
        with self.failing_save(step, out):
            start_checkpoint(out, step, self.cfg, self.meta)
            with quiet_single_process():
                self.pending = (
                    step,
                    out,
                    dcp.async_save(state, checkpoint_id=str(out), process_group=self.save_group),
                )
        if in_save is not None:
            in_save()  # while the background write is under way
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
        with self.failing_save(step, out):
            future.result()
            mark_committed(out, step)
        self.committed.append((step, out))
        self.prune()

    @contextmanager
    def failing_save(self, step: int, out: Path):
        """Turn any failure of a save into `SaveFailed` (DCP raises CheckpointException,
        a BaseException, with each failed rank's error) and remove the partial directory
        (it would never load, having no marker, but it holds the disk's space)."""
        try:
            yield
        except (OSError, CheckpointException) as error:
            if is_main():
                shutil.rmtree(out, ignore_errors=True)
            cause = f"{save_error_text(error)} ({space_left(out.parent)})"
            raise SaveFailed(step, out, cause) from None

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
            # Newest first, passing over corrupt ones (with a warning), which are then
            # renamed step_N.corrupt: pruning must not count them among the kept ones.
            source, corrupt = newest_intact(self.run_dir, self.cfg.checkpoint.verify)
            if source is None:
                return 0
            barrier()  # every rank has chosen before the corrupt ones move
            for path in corrupt if is_main() else []:
                set_aside(path)
            return self.load(source, verify=False)  # checked just now
        return self.load(resolve_checkpoint(choice))  # corrupt: fails, no fallback

    def load(self, source: Path, verify: bool | None = None) -> int:
        """Load a checkpoint's whole training state: its file sizes checked against the
        commit record, and its checksums with `verify` (default: checkpoint.verify)."""
        check_intact(source, self.cfg.checkpoint.verify if verify is None else verify)
        state = self.state(0)
        table = tensor_table(source)
        check_compatible(source, state["model"], self.pm.dims.pp == 1, table)
        fit_guard_state(table, state)
        with quiet_single_process():
            dcp.load(state, checkpoint_id=str(source))
        if self.guard is not None and "guard" in state:
            self.guard.load_state_dict(state["guard"])
        for part in self.pm.parts:
            set_model_state_dict(part, state["model"], options=StateDictOptions(strict=False))
        torch.set_rng_state(state["rng"])
        if self.stream is not None and "data" in state:
            self.stream.load_state_dict(state["data"])
        step = int(state["step"])
        if is_main():
            print(f"causeway: resumed from {source} at step {step}", flush=True)
        return step


def save_error_text(error: BaseException) -> str:
    """One line for a failed save: DCP's exception lists each failed rank's error."""
    if isinstance(error, CheckpointException):
        causes = {
            f"rank {rank}: {type(failure[0]).__name__}: {str(failure[0]).strip()}"
            for rank, failure in error.failures.items()
        }
        return "; ".join(sorted(causes)) or str(error)
    return str(error)


def space_left(path: Path) -> str:
    """How full the disk is: torch.save reports a full disk as a zip 'unexpected pos'."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return f"{path} cannot be read"
    free, total = usage.free / (1 << 20), usage.total / (1 << 20)
    return f"{free:.1f} MiB free of {total:.1f} MiB on the filesystem of {path}"
