"""Mirror the logged training figures to Weights & Biases (the `wandb` extra).

On while `train.wandb.project` is set. The W&B run id is made once per run directory and
kept in RUN_DIR/wandb_id, so a resumed, restarted or requeued job continues the same W&B
run instead of starting a new one each time.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import secrets
from pathlib import Path
from typing import Any

from causeway.config import ConfigError, RunConfig

ID_FILE = "wandb_id"
# W&B drops any `step=` lower than one it has seen, and a requeued job re-logs the steps
# after its last checkpoint; so the training step is a metric (the x-axis), not W&B's step.
STEP_KEY = "train/step"


def stable_id(run_dir: Path) -> str:
    """This run directory's W&B run id: read from RUN_DIR/wandb_id, or made and kept.
    Made here, not by wandb (whose id helper has moved between releases)."""
    path = Path(run_dir) / ID_FILE
    if path.is_file() and (kept := path.read_text().strip()):
        return kept
    run_id = secrets.token_hex(6)  # W&B ids: letters and digits, unique in the project
    path.write_text(run_id + "\n")
    return run_id


def numeric(figures: dict[str, Any]) -> dict[str, float | int]:
    """The figures W&B can chart: numbers (numpy's too), not flags or text."""
    return {
        key: value
        for key, value in figures.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool)
    }


class WandbSink:
    """`log(step, figures)` as MetricsLogger does; also usable as a TrainerHook (`on_log`)."""

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def build(cls, cfg: RunConfig, run_dir: Path) -> WandbSink | None:
        """The sink for this run, or None when no W&B project is set or on ranks other
        than 0 (one W&B run per job: metrics are already reduced onto rank 0)."""
        from causeway.checkpoint.ranks import is_main

        settings = cfg.train.wandb
        if not settings.project or not is_main():
            return None
        try:
            import wandb
        except ImportError as err:
            raise ConfigError(
                f"train.wandb.project is '{settings.project}' but wandb is not installed: "
                "pip install 'causeway[wandb]'"
            ) from err
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=settings.name or run_dir.name,
            dir=str(run_dir),
            config=dataclasses.asdict(cfg),
            # WANDB_MODE, where set, wins: a job script on nodes without internet sets
            # it to offline without editing the recipe.
            mode=os.environ.get("WANDB_MODE") or settings.mode,
            resume="allow",
            id=stable_id(run_dir),
        )
        run.define_metric(STEP_KEY)
        run.define_metric("*", step_metric=STEP_KEY)
        return cls(run)

    def log(self, step: int, figures: dict[str, Any]) -> None:
        self.run.log({**numeric(figures), STEP_KEY: step})

    def on_log(self, step: int, figures: dict[str, Any]) -> None:
        self.log(step, figures)

    def close(self, exit_code: int = 0) -> None:
        """Finish the W&B run; a nonzero `exit_code` (a stop, a crash) marks it failed."""
        self.run.finish(exit_code=exit_code)
