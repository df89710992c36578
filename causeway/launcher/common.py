"""What every launcher does before it starts anything: resolve and freeze the run.

The run's resolved config is written to RUN_DIR/recipe.yaml and every worker trains from
that file, so a requeued or restarted job runs exactly what was submitted even if the
recipe has changed since. `checkpoint.resume: auto` makes each start continue from the
newest committed checkpoint.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import sys
import time
from pathlib import Path

from causeway.config import ConfigError, RunConfig, load_config, save_config
from causeway.parallel.dims import ParallelDims

LAUNCH_RECORD = "launch.json"


def resolve_run(
    recipe: str, overrides: list[str], launcher: str, world_size: int, run_dir: Path | None
) -> tuple[RunConfig, Path]:
    """The checked config (with its layout checked against `world_size`) and run dir."""
    if world_size < 1:
        raise ConfigError(f"launch {launcher}: the world size must be >= 1, got {world_size}")
    sets = [*overrides, f"launch.launcher={launcher}", "checkpoint.resume=auto"]
    cfg = load_config(recipe, sets)
    # On a copy: an unset micro-batch stays unset in the frozen recipe, to be resolved
    # for whatever world size a restart gets (Ray may continue on fewer workers).
    ParallelDims.from_config(copy.deepcopy(cfg), world_size)
    run_dir = Path(run_dir or cfg.run_dir or Path("runs") / cfg.name).resolve()
    cfg.run_dir = str(run_dir)
    return cfg, run_dir


def freeze_run(cfg: RunConfig, run_dir: Path) -> Path:
    """Write the resolved recipe every worker trains from."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    recipe = run_dir / "recipe.yaml"
    save_config(cfg, recipe)
    return recipe


def train_command(recipe: Path, run_dir: Path) -> list[str]:
    """The worker's command after the torchrun arguments."""
    return ["-m", "causeway", "train", str(recipe), "--run-dir", str(run_dir)]


def write_launch_record(run_dir: Path, **fields) -> None:
    record = {**fields, "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (run_dir / LAUNCH_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def require_command(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"'{name}' is not on the PATH: {why}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python() -> str:
    return sys.executable
