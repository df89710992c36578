"""`causeway launch slurm` against the real local Slurm (slurm/local-cluster.sh)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.launcher.procs import TINY, losses_by_step, wait_for_step
from tests.launcher.slurm_cluster import require_cluster, wait_for_job, wait_for_running

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS = 24


def submit(run_dir, env, *flags, steps=None) -> str:
    extra = [f"train.steps={steps or STEPS}"]
    sets = [arg for item in [*TINY, *extra] for arg in ("--set", item)]
    command = [sys.executable, "-m", "causeway", "launch", "slurm", "tiny-cd-flm",
               "--nodes", "2", "--gpus-per-node", "0", "--run-dir", str(run_dir),
               "--signal-lead", "10", *flags, *sets]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "submitted Slurm job" in result.stdout and str(run_dir) in result.stdout
    return json.loads((run_dir / "launch.json").read_text())["job_id"]


def signal_steps(job_id: str, env: dict) -> None:
    """What Slurm does ahead of the time limit: USR2 to every process of the steps."""
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, env=env)


def wait_for_attempts(run_dir, count: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run_dir / "attempts.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.5)
    raise AssertionError(f"{run_dir} has fewer than {count} attempts")


def slurm_log(run_dir, job_id) -> str:
    return (run_dir / "logs" / f"slurm-{job_id}.out").read_text()


def test_two_node_cpu_job_runs_to_the_end(builtin_dir, tmp_path):
    env = require_cluster()
    run = tmp_path / "run"
    job_id = submit(run, env, steps=4)
    fields = wait_for_job(job_id, env)
    assert fields["JobState"] == "COMPLETED", slurm_log(run, job_id)
    assert fields["NumNodes"] == "2"
    assert sorted(losses_by_step(run)) == [1, 2, 3, 4]
    assert (run / "checkpoints" / "step_4" / "COMMITTED").is_file()
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert attempts[0]["world_size"] == 2 and attempts[0]["slurm_job_id"] == job_id
    # Two torchrun agents (one per node) rendezvoused: one log folder per node's agent.
    assert "rendezvous" in slurm_log(run, job_id)


def test_warning_signal_checkpoints_requeues_and_resumes_exactly(baseline_losses, tmp_path):
    env = require_cluster()
    run = tmp_path / "run"
    job_id = submit(run, env)
    wait_for_step(run, 3)
    signalled = time.monotonic()
    signal_steps(job_id, env)
    wait_for_running(job_id, env, restarts=1)
    print(f"signal to restart: {time.monotonic() - signalled:.1f} s")
    fields = wait_for_job(job_id, env)
    log = slurm_log(run, job_id)
    assert fields["JobState"] == "COMPLETED", log[-3000:]
    assert "requeueing (restart 1 of 3)" in log
    expected, got = baseline_losses, losses_by_step(run)
    assert sorted(got) == sorted(expected)
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-6, abs=1e-6), step


def test_max_requeues_is_honoured(builtin_dir, tmp_path):
    env = require_cluster()
    run = tmp_path / "run"
    job_id = submit(run, env, "--max-requeues", "1", steps=400)
    wait_for_step(run, 2)
    signal_steps(job_id, env)
    wait_for_running(job_id, env, restarts=1)
    resumed_at = wait_for_attempts(run, 2)[1]["start_step"]
    assert resumed_at >= 2
    wait_for_step(run, resumed_at + 2)
    signal_steps(job_id, env)
    fields = wait_for_job(job_id, env)
    log = slurm_log(run, job_id)
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "75:0", log[-2000:]
    assert "not requeued: SLURM_RESTART_COUNT=1 reached --max-requeues 1" in log
    assert fields["Restarts"] == "1"
