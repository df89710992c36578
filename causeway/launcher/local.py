"""`causeway launch local`: torchrun on this machine, c10d rendezvous on 127.0.0.1.

Each rank's output goes to RUN_DIR/logs/ (torchrun's --log-dir, one file per rank) and
to the terminal. The exit status is the run's: 0 when it finished, EXIT_STOPPED (75)
when a stop signal made it save and stop, otherwise torchrun's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from causeway.launcher.common import (
    free_port,
    freeze_run,
    python,
    resolve_run,
    train_command,
    write_launch_record,
)
from causeway.train.stop import EXIT_STOPPED, STOP_RECORD


def torchrun_args(nnodes: str, nproc: int, endpoint: str, run_id: str, log_dir: str) -> list:
    return [
        "-m", "torch.distributed.run", "--nnodes", nnodes, "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", run_id,
        "--log-dir", log_dir, "--redirects", "3", "--tee", "3",
    ]  # fmt: skip


def launch_local(recipe: str, overrides: list[str], nproc: int, run_dir: Path | None) -> int:
    cfg, run_dir = resolve_run(recipe, overrides, "local", nproc, run_dir)
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
