"""`causeway launch ray` on a real Ray cluster on 127.0.0.1: failures, jobs, bad input (fewer
workers: test_ray_elastic.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.launcher.procs import finish, wait_for_step
from tests.launcher.ray_cluster import (
    STEPS,
    RayCluster,
    assert_same_losses,
    kill,
    ray_env,
    ray_launch,
    require_ray,
    running,
    train_worker_pids,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def shared():
    """One 3-CPU cluster for the tests that do not change its nodes (a cluster takes
    ~20 s to start and ~7 s to stop on a small machine)."""
    require_ray()
    cluster = RayCluster(3)
    yield cluster
    cluster.stop()


def test_killed_worker_is_restarted_and_resumes_exactly(shared, baseline_losses, tmp_path):
    head = shared
    run = tmp_path / "run"
    proc = ray_launch(run, head.address, "--workers", "2", "--max-failures", "2")
    running(proc, lambda: wait_for_step(run, 4, alive=lambda: proc.poll() is None))
    kill(train_worker_pids()[-1])  # SIGKILL, after step 3's checkpoint
    code, out = finish(proc)
    text = out.decode(errors="replace") if isinstance(out, bytes) else out
    assert code == 0, text[-4000:]
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[1]["start_step"] >= 3
    assert_same_losses(run, baseline_losses, after=attempts[1]["start_step"])


def test_submit_as_a_ray_job(shared, builtin_dir, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    head = shared
    run = tmp_path / "run"
    code, out = finish(ray_launch(run, head.address, "--workers", "2", "--submit"))
    assert code == 0, out[-3000:]
    record = json.loads((run / "launch.json").read_text())
    client = JobSubmissionClient(record["ray_address"])
    deadline = time.monotonic() + 300
    while client.get_job_status(record["submission_id"]) not in JobStatus.__members__.values() or (
        not client.get_job_status(record["submission_id"]).is_terminal()
    ):
        assert time.monotonic() < deadline, client.get_job_logs(record["submission_id"])[-3000:]
        time.sleep(1)
    status = client.get_job_status(record["submission_id"])
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(record["submission_id"])[-3000:]
    assert (run / "checkpoints" / f"step_{STEPS}" / "COMMITTED").is_file()


def test_bad_input_is_one_line_and_starts_nothing(shared, builtin_dir, tmp_path):
    head = shared
    cases = [
        (["--address", "127.0.0.1:1", "--workers", "1"], "no Ray cluster answers at"),
        (["--address", head.address, "--workers", "1", "--gpus-per-worker", "1"], "no GPUs"),
        (
            ["--address", head.address, "--workers", "4", "--set", "data.micro_batch_size=2"],
            "4 workers of 1 CPU do not fit on the Ray cluster",
        ),
        (["--address", head.address, "--workers", "2", "--set", "parallel.tp=3"], "world size"),
    ]
    for flags, message in cases:
        command = [sys.executable, "-m", "causeway", "launch", "ray", "tiny-cd-flm",
                   "--run-dir", str(tmp_path / "r"), *flags]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, env=ray_env())
        assert result.returncode == 2, (flags, result.stderr[-2000:])
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "r").exists()


def test_without_ray_the_error_names_the_extra(tmp_path):
    # An importable `ray` that fails as a missing one does: the interpreter's own ray is
    # installed in CI, so absence is made by shadowing it first on the path.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text('raise ImportError("No module named ray")\n')
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "causeway", "launch", "ray", "tiny-cd-flm", "--address",
               "127.0.0.1:1", "--workers", "1", "--run-dir", str(tmp_path / "r")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "pip install 'causeway[ray]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
