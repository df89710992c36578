"""The function every Ray Train worker runs: causeway's trainer, reporting to Ray Train.

The run directory is Ray's experiment directory (storage_path/name), so a committed
checkpoint RUN_DIR/checkpoints/step_N is already where Ray keeps checkpoints: it is
reported in place (CheckpointUploadMode.NO_UPLOAD, nothing is copied), and after a
restart Ray's `get_checkpoint()` names the directory `checkpoint.resume: auto` loads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("causeway.launcher")


class RayReport:
    """Trainer hook: each committed checkpoint goes to `ray.train.report`, with the latest
    logged figures. Not every logged step: a report waits until Ray's controller has taken
    the previous one, which it polls for every 2 s, so reporting each step would cap
    training at one step per poll. `report` is also a barrier across the workers; the
    trainer calls the hooks on every rank at the same steps."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.figures: dict = {}

    def on_log(self, step: int, figures: dict) -> None:
        self.figures = plain(figures)

    def on_checkpoint(self, step: int, path: Path) -> None:
        import ray.train
        from ray.train import Checkpoint, CheckpointUploadMode

        # Rank 0 registers it: one checkpoint for the whole group, as DCP wrote it.
        checkpoint = Checkpoint.from_directory(str(path)) if self.rank == 0 else None
        ray.train.report(
            {**self.figures, "step": step},
            checkpoint=checkpoint,
            checkpoint_dir_name=path.name,
            checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
        )


def plain(figures: dict) -> dict:
    """Ray keeps reported metrics as Python values; tensors would pin memory."""
    return {k: float(v) if hasattr(v, "item") else v for k, v in figures.items()}


def check_resume_point(reported, run_dir: Path, rank: int) -> Path | None:
    """Ray's newest reported checkpoint should be causeway's newest committed one; it lags
    when a worker died between the commit and the report. Training resumes from the
    newest committed checkpoint either way (`resume: auto`)."""
    from causeway.checkpoint.discovery import newest_committed

    newest = newest_committed(run_dir)
    if rank != 0 or reported is None:
        return newest
    if newest is None or Path(reported.path).resolve() != newest.resolve():
        log.warning(
            "causeway: Ray's checkpoint %s is not the newest committed one (%s); "
            "resuming from the newest committed",
            reported.path,
            newest,
        )
    return newest


def train_loop(config: dict) -> None:
    import ray.train

    from causeway.config import load_config
    from causeway.train.trainer import run_training

    context = ray.train.get_context()
    rank = context.get_world_rank()
    # Ray Train makes the process group itself; causeway picks its device from LOCAL_RANK.
    os.environ["LOCAL_RANK"] = str(context.get_local_rank())
    run_dir = Path(config["run_dir"])
    check_resume_point(ray.train.get_checkpoint(), run_dir, rank)
    cfg = load_config(config["recipe"])
    run_training(cfg, run_dir, hooks=[RayReport(rank)])
