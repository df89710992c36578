"""Find real training processes from outside, to signal them as a scheduler would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# A 2-layer model on 64-token rows: a step takes a fraction of a second on 2 processes.
TINY = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.d_ff=128",
    "model.max_seq_len=64", "data.seq_len=64", "data.batch_size=4", "data.micro_batch_size=2",
    "train.log_every=1", "train.precision=fp32", "schedule.warmup_steps=2",
    "optimizer.eps=1e-6", "checkpoint.every=100",
]  # fmt: skip


RUN_MARK = "CAUSEWAY_TEST_RUN_DIR"  # set for the ranks of each test launch (rank_pids)


def launch(
    run_dir, steps: int, nproc: int = 2, extra=(), faults: str = "", new_session: bool = False
) -> subprocess.Popen:
    """`causeway launch local tiny-cd-flm` with TINY, `extra` settings and test faults
    (CAUSEWAY_TEST_FAULTS); `new_session` puts the job in its own process group."""
    items = [*TINY, f"train.steps={steps}", *extra]
    sets = [arg for item in items for arg in ("--set", item)]
    command = [sys.executable, "-m", "causeway", "launch", "local", "tiny-cd-flm",
               "--nproc", str(nproc), "--run-dir", str(run_dir), *sets]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAUSEWAY_TEST_FAULTS": faults,
           RUN_MARK: str(run_dir)}  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


def rank_pids(run_dir) -> dict[int, int]:
    """PID of every live `causeway train` rank of the launch into `run_dir`, by its RANK.

    Found by the environment `launch` gave it, which every rank inherits and keeps after
    its launcher is gone: tests running beside this one (pytest -n) have ranks too."""
    mark = str(run_dir).encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"causeway" not in cmdline or b"train" not in cmdline or b"-m" not in cmdline:
            continue
        if b"torch.distributed.run" in cmdline or b"causeway.launcher.torchrun" in cmdline:
            continue  # the torchrun agent, not a rank
        env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"RANK" in env and env.get(RUN_MARK.encode()) == mark:
            found[int(env[b"RANK"])] = int(proc.name)
    return found


def logged_steps(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written
    return [r for r in records if "loss" in r]


def wait_for_step(run_dir: Path, step: int, timeout: float = 300.0, alive=None) -> None:
    """Until metrics.jsonl has logged `step` (alive(): False stops waiting early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = logged_steps(run_dir)
        if records and records[-1]["step"] >= step:
            return
        if alive is not None and not alive():
            raise AssertionError(f"the run ended before step {step}")
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} did not reach step {step} in {timeout} s")


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """The last logged loss of every step (a resumed run logs its steps again)."""
    return {r["step"]: r["loss"] for r in logged_steps(run_dir)}


def rank_logs(run_dir: Path) -> str:
    """Everything the ranks printed (torchrun writes each rank's output under logs/)."""
    return "".join(p.read_text(errors="replace") for p in sorted(Path(run_dir).rglob("std*.log")))
