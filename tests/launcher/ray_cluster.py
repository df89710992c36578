"""A real Ray cluster on 127.0.0.1 for the launcher tests (`ray start`, then `ray stop`),
and the launches the Ray tests make on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launcher.procs import TINY, losses_by_step
from tests.parallel.harness import free_port

BIN = Path(sys.executable).parent
STEPS = 24  # = conftest.BASELINE_STEPS, the run the losses are compared with
RAY_SETS = [*TINY, f"train.steps={STEPS}", "checkpoint.every=3"]


def ray_env() -> dict[str, str]:
    # The cluster's processes (and a submitted job's driver) find this venv's python.
    # A node that is gone is declared dead after ~3 s instead of Ray's ~15-25 s (health
    # checks every 3 s, 5 failures), so the fewer-workers test does not wait on it; not
    # sooner, so that a live node on a loaded machine (`make test` runs two workers) is not.
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20",
            # Ray Train's controller takes a report when it polls (every 2 s by default):
            # each checkpoint's report waited up to 2 s, 8 per run.
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}  # fmt: skip


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs the ray extra: {err}")
        pytest.skip(f"ray is not installed ({err}): pip install 'causeway[ray]'")


def ray(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=ray_env(), capture_output=True,
                          text=True, check=check, timeout=180)  # fmt: skip


class RayCluster:
    def __init__(self, cpus: int) -> None:
        self.port, self.dashboard_port = free_port(), free_port()
        ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
            "--num-cpus", str(cpus), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port), "--object-store-memory", "80000000",
            "--disable-usage-stats")  # fmt: skip

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_node(self, cpus: int) -> None:
        ray("start", "--address", self.address, "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(cpus), "--object-store-memory", "80000000")  # fmt: skip

    def stop(self) -> None:
        ray("stop", "--force", check=False)


def train_worker_pids() -> list[int]:
    """PIDs of live Ray Train workers (their process title names the actor)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(
                b"ray::RayTrainWorker"
            ):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def newest_raylet_pid() -> int:
    """The raylet of the node added last (the highest PID of the raylets)."""
    out = subprocess.run(["pgrep", "-f", "raylet/raylet"], capture_output=True, text=True)
    return max(int(pid) for pid in out.stdout.split())


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def ray_launch(run_dir, address, *flags) -> subprocess.Popen:
    sets = [arg for item in RAY_SETS for arg in ("--set", item)]
    command = [sys.executable, "-m", "causeway", "launch", "ray", "tiny-cd-flm", "--address",
               address, "--run-dir", str(run_dir), *flags, *sets]  # fmt: skip
    return subprocess.Popen(command, env=ray_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


def running(proc: subprocess.Popen, wait) -> None:
    """Run `wait`; if the launch ended meanwhile, fail with what it printed."""
    try:
        wait()
    except AssertionError as err:
        proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
        raise AssertionError(f"{err}\n{out[-4000:]}") from None


def assert_same_losses(run, expected, after: int = 0) -> None:
    got = losses_by_step(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(after + 1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step
