"""`causeway launch ray` on a real Ray cluster on 127.0.0.1: failures, fewer workers, jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.launcher.procs import TINY, finish, launch, losses_by_step, wait_for_step
from tests.launcher.ray_cluster import (
    RayCluster,
    kill,
    newest_raylet_pid,
    ray_env,
    require_ray,
    train_worker_pids,
)

STEPS = 24

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
RAY_SETS = [*TINY, f"train.steps={STEPS}", "checkpoint.every=3"]


@pytest.fixture
def cluster():
    require_ray()
    made: list[RayCluster] = []

    def start(cpus: int = 3) -> RayCluster:
        made.append(RayCluster(cpus))
        return made[-1]

    yield start
    for c in made:
        c.stop()


def ray_launch(run_dir, address, *flags) -> subprocess.Popen:
    sets = [arg for item in RAY_SETS for arg in ("--set", item)]
    command = [sys.executable, "-m", "causeway", "launch", "ray", "tiny-cd-flm", "--address",
               address, "--run-dir", str(run_dir), *flags, *sets]  # fmt: skip
    return subprocess.Popen(command, env=ray_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, builtin_dir):
    """The uninterrupted run: 2 processes, the same layout Ray's 2 workers get."""
    run = tmp_path_factory.mktemp("ray-baseline") / "run"
    code, out = finish(launch(run, STEPS, extra=["checkpoint.every=3"]))
    assert code == 0, out[-3000:]
    return losses_by_step(run)


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


def test_killed_worker_is_restarted_and_resumes_exactly(cluster, baseline, tmp_path):
    head = cluster(3)
    run = tmp_path / "run"
    proc = ray_launch(run, head.address, "--workers", "2", "--max-failures", "2")
    running(proc, lambda: wait_for_step(run, 4, alive=lambda: proc.poll() is None))
    kill(train_worker_pids()[-1])  # SIGKILL, after step 3's checkpoint
    code, out = finish(proc)
    text = out.decode(errors="replace") if isinstance(out, bytes) else out
    assert code == 0, text[-4000:]
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[1]["start_step"] >= 3
    assert_same_losses(run, baseline, after=attempts[1]["start_step"])


def test_fewer_workers_when_capacity_is_lost(cluster, baseline, tmp_path):
    head = cluster(1)
    head.add_node(1)
    run = tmp_path / "run"
    proc = ray_launch(run, head.address, "--workers", "2", "--min-workers", "1")
    running(proc, lambda: wait_for_step(run, 4, alive=lambda: proc.poll() is None))
    kill(newest_raylet_pid())  # the second node is gone, and its worker with it
    code, out = finish(proc)
    assert code == 0, out[-4000:]
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert [a["world_size"] for a in attempts] == [2, 1]
    # The global batch is a function of the data position alone: on 1 worker the run
    # reads exactly the documents 2 workers would have, so its losses are the baseline's.
    assert_same_losses(run, baseline, after=0)


def test_submit_as_a_ray_job(cluster, builtin_dir, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    head = cluster(3)
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


def test_bad_input_is_one_line_and_starts_nothing(cluster, builtin_dir, tmp_path):
    head = cluster(2)
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
