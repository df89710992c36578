"""The local Slurm that `make test` starts (slurm/local-cluster.sh), for the tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

STATE = Path(os.environ.get("CAUSEWAY_SLURM_HOME", "/tmp/causeway-slurm"))
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def cluster_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if (STATE / "slurm.conf").is_file():
        env["SLURM_CONF"] = str(STATE / "slurm.conf")
    return env


def require_cluster() -> dict[str, str]:
    """The environment to talk to the cluster; skip (fail under CI=true) without one."""
    env = cluster_env()
    why = None
    if shutil.which("sinfo") is None:
        why = "sinfo not found: start one with `bash slurm/local-cluster.sh start` (root)"
    else:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
        if out.returncode or "idle" not in out.stdout and "mix" not in out.stdout:
            why = f"no idle Slurm node ({out.stderr.strip() or out.stdout.strip()})"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the local Slurm: {why}")
        pytest.skip(why)
    return env


def job_fields(job_id: str, env: dict) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, env=env)  # fmt: skip
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def wait_for_job(job_id: str, env: dict, timeout: float = 400) -> dict[str, str]:
    """Until the job reaches a final state (a requeued job passes through PENDING)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = job_fields(job_id, env)
        if fields.get("JobState") in FINAL_STATES:
            return fields
        time.sleep(1)
    subprocess.run(["scancel", job_id], env=env)
    raise AssertionError(f"Slurm job {job_id} did not finish in {timeout} s: {fields}")


def wait_for_running(job_id: str, env: dict, restarts: int, timeout: float = 300) -> None:
    """Until the requeued job runs again. Slurm holds a requeued job until its old
    credential has expired (AuthInfo cred_expire, 5 s on the local cluster; 120 s by
    default); lifting that hold makes the restart fail ("Job credential revoked")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = job_fields(job_id, env)
        if fields.get("JobState") == "RUNNING" and int(fields.get("Restarts", 0)) == restarts:
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not running with {restarts} restarts: {fields}")
