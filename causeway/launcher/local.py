"""`causeway launch local`: torchrun on this machine, c10d rendezvous on 127.0.0.1.

Each rank's output goes to RUN_DIR/logs/ (torchrun's --log-dir, one file per rank) and
to the terminal. The exit status is the run's: 0 when it finished, EXIT_STOPPED (75)
when a stop signal made it save and stop, 2 for a usage error (before torchrun starts, as
one line with nothing written, or from the workers, printed by local rank 0 only),
otherwise that of the rank that failed first (`causeway.launcher.torchrun`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from causeway.config import ConfigError
from causeway.launcher.common import (
    free_port,
    freeze_run,
    python,
    resolve_run,
    train_command,
    write_launch_record,
)
from causeway.launcher.preflight import check_run_inputs
from causeway.train.stop import EXIT_STOPPED, STOP_RECORD


def torchrun_args(nnodes: str, nproc: int, endpoint: str, run_id: str, log_dir: str) -> list:
    return [
        "-m", "causeway.launcher.torchrun", "--nnodes", nnodes, "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", run_id,
        "--log-dir", log_dir, "--redirects", "3", "--tee", "3",
    ]  # fmt: skip


def launch_local(recipe: str, overrides: list[str], nproc: int, run_dir: Path | None) -> int:
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1 (got {nproc})")
    cfg, run_dir = resolve_run(recipe, overrides, "local", nproc, run_dir)
    check_run_inputs(cfg, run_dir, nproc)
    frozen = freeze_run(cfg, run_dir)
    write_launch_record(run_dir, launcher="local", nproc=nproc, recipe=recipe, logs="logs/")
    (run_dir / STOP_RECORD).unlink(missing_ok=True)
    endpoint = f"127.0.0.1:{free_port()}"
    args = torchrun_args("1", nproc, endpoint, cfg.name, str(run_dir / "logs"))
    print(f"causeway: launching {nproc} processes, run dir {run_dir}, logs {run_dir / 'logs'}")
    code = subprocess.call([python(), *args, *train_command(frozen, run_dir)])
    if code and (run_dir / STOP_RECORD).is_file():
        return EXIT_STOPPED
    return code
