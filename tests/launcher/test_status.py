"""`causeway status`: real tiny runs (stopped by a real signal, resumed), hand-written
launcher records, real `scontrol` output and the real local Slurm where there is one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from causeway.config import ConfigError, load_config
from causeway.launcher import status
from causeway.launcher.status import run_status, slurm_state, status_record, tail_records
from causeway.train.stop import TrainingStopped
from causeway.train.trainer import run_training
from tests.launcher.slurm_cluster import require_cluster

SETS = ["train.steps=4", "data.batch_size=2", "train.log_every=1", "checkpoint.every=2",
        "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64",
        "data.seq_len=32", "train.precision=fp32", "train.progress=lines"]  # fmt: skip

# `scontrol show job` of the local Slurm (slurm/local-cluster.sh): a requeued batch job
# waiting out its BeginTime, then a job array (one record per task, blank-line apart).
REQUEUED = """JobId=9 JobName=rq.sh
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=4294901751 Nice=0 Account=(null) QOS=(null)
   JobState=PENDING Reason=BeginTime Dependency=(null)
   Requeue=1 Restarts=1 BatchFlag=1 Reboot=0 ExitCode=0:0
   SubmitTime=2026-12-02T10:22:05 EligibleTime=2026-12-02T10:24:06
   Power=
"""
ARRAY = """JobId=12 ArrayJobId=12 ArrayTaskId=0 JobName=arr
   JobState=COMPLETED Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0

JobId=13 ArrayJobId=12 ArrayTaskId=1 JobName=arr
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=3 BatchFlag=1 Reboot=0 ExitCode=0:0
"""


class StopAt2:
    """Sends this process the signal Slurm sends ahead of a time limit, after step 2."""

    def on_log(self, step: int, figures: dict) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGUSR2)


def last_metrics(run) -> dict:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]


@pytest.fixture(scope="module")
def stopped_run(builtin_dir, tmp_path_factory):
    """A real run of 4 steps stopped by SIGUSR2 after step 2 (checkpoint step_2)."""
    run = tmp_path_factory.mktemp("status") / "run"
    with pytest.raises(TrainingStopped):
        run_training(load_config("tiny-cd-flm", SETS), run, hooks=[StopAt2()])
    return run


def test_stopped_then_resumed_run(stopped_run, tmp_path):
    run = shutil.copytree(stopped_run, tmp_path / "run")
    text = run_status(run)
    last = last_metrics(run)
    assert f"step 2/4 | loss {last['loss']:.4g} | tokens_per_s {last['tokens_per_s']:,.0f}" in text
    assert "launcher    direct (causeway train / torchrun)" in text
    assert f"checkpoint  step 2 ({run / 'checkpoints' / 'step_2'}), 0 partial" in text
    assert "attempts    1 (0 restarts, 0 Slurm requeues)" in text
    assert text.endswith("state       stopped at step 2 on SIGUSR2; resume continues")
    run_training(load_config("tiny-cd-flm", [*SETS, "checkpoint.resume=auto"]), run)
    record = status_record(run)
    assert record["finished"] and record["state"] == "finished"
    assert (record["step"], record["checkpoint_step"], record["total_steps"]) == (4, 4, 4)
    assert record["loss"] == last_metrics(run)["loss"]
    assert (record["attempts"], record["restarts"], record["stop"]["stale"]) == (2, 1, True)
    assert "stop        step 2 on SIGUSR2 (an earlier attempt's; resumed since)" in run_status(run)


def test_slurm_records_partial_checkpoint_and_ragged_metrics(stopped_run, tmp_path):
    run = shutil.copytree(stopped_run, tmp_path / "run")
    (run / "launch.json").write_text(json.dumps(
        {"launcher": "slurm", "job_id": "999999", "submission_id": None, "ray_address": None,
         "recipe": str(run / "recipe.yaml"), "submitted_at": "2026-12-02T10:00:00+0000"}
    ))  # fmt: skip
    attempts = [{"started_at": f"2026-12-02T10:0{i}:00+0000", "start_step": 2 * i,
                 "world_size": 2, "launcher": "slurm", "slurm_job_id": "999999",
                 "slurm_restart_count": i} for i in range(3)]  # fmt: skip
    (run / "attempts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in attempts))
    (run / "checkpoints" / "step_6").mkdir()  # shards written, never committed
    (run / "checkpoints" / "step_6" / ".metadata").write_bytes(b"partial")
    with (run / "metrics.jsonl").open("a") as out:
        out.write(json.dumps({"step": 2, "val_loss": 9.5, "val_tokens": 64}) + "\n")
        out.write('{"step": 3, "loss": 1.')  # a crash mid-write
    record = status_record(run)
    assert (record["attempts"], record["restarts"], record["slurm_requeues"]) == (3, 2, 2)
    assert record["partial_checkpoints"] == ["step_6"] and record["checkpoint_step"] == 2
    assert (record["step"], record["val_loss"]) == (2, 9.5)
    assert record["loss"] == last_metrics(stopped_run)["loss"]
    # No such job on any cluster: the state is unknown, with Slurm's (or PATH's) reason.
    assert record["scheduler"]["state"].startswith("unknown (")
    text = run_status(run)
    assert "launcher    slurm, job 999999: unknown (" in text
    assert "1 partial" in text and "3 (2 restarts, 2 Slurm requeues)" in text


def test_tail_read_grows_until_it_finds_the_keys(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "loss": 2.0, "tokens_per_s": 10.0}]
    lines += [{"step": 1 + i, "val_loss": 1.0, "pad": "x" * 100} for i in range(5000)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert len(tail_records(path, ("val_loss",), window=4096)) < 100  # the tail only
    records = tail_records(path, ("loss",), window=4096)
    assert records[0] == lines[0] and len(records) == len(lines)


def test_not_a_run_directory(tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError, match="is not a causeway run directory"):
            status_record(path)


def test_parse_scontrol_samples():
    assert status.parse_scontrol(REQUEUED) == {"state": "PENDING", "restarts": 1}
    assert status.parse_scontrol(ARRAY) == {"state": "COMPLETED", "restarts": 0}
    assert status.parse_scontrol("") == {"state": None, "restarts": None}


def substitute(programs: dict[str, list[str]]):
    """A runner that runs other real commands in place of the Slurm ones."""
    return lambda argv, **kw: subprocess.run(programs[argv[0]], **kw)


def test_slurm_query_paths_with_real_commands(tmp_path, monkeypatch):
    (tmp_path / "scontrol.txt").write_text(REQUEUED)
    gone = substitute({"squeue": ["true"], "scontrol": ["cat", str(tmp_path / "scontrol.txt")]})
    assert slurm_state("9", gone) == {"state": "PENDING", "restarts": 1}
    started = time.monotonic()
    slow = substitute({"squeue": ["sleep", "5"], "scontrol": ["sleep", "5"]})
    assert slurm_state("9", slow, timeout=0.3)["state"] == "unknown (squeue timed out after 0.3 s)"
    assert time.monotonic() - started < 2  # scontrol was not asked as well
    failing = substitute({"squeue": ["false"], "scontrol": ["sh", "-c", "echo boom >&2; exit 1"]})
    assert slurm_state("9", failing)["state"] == "unknown (boom)"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_state("9") == {"state": "unknown (squeue not found)", "restarts": None}


def test_slurm_query_on_this_machine():
    found = slurm_state("999999")["state"]  # no such job on any cluster here
    assert found == "unknown (squeue not found)" if shutil.which("squeue") is None else (
        found.startswith("unknown (")
    )  # fmt: skip


def test_state_of_a_real_slurm_job(tmp_path):
    env = require_cluster()
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-J", "status-test", "-o", "/dev/null", "--wrap", "sleep 60"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    job_id = submitted.stdout.strip().split(";")[0]
    (tmp_path / "launch.json").write_text(json.dumps({"launcher": "slurm", "job_id": job_id}))
    try:
        assert status_record(tmp_path)["scheduler"]["state"] in {"PENDING", "RUNNING"}
    finally:
        subprocess.run(["scancel", job_id], env=env, check=True)
    deadline = time.monotonic() + 30
    while slurm_state(job_id)["state"] != "CANCELLED" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert f"launcher    slurm, job {job_id}: CANCELLED" in run_status(tmp_path)


def test_ray_state_without_ray_or_ids():
    assert status.ray_state(None, "raysubmit_1").startswith("unknown (launch.json has no")
    found = status.ray_state("http://127.0.0.1:9", "raysubmit_1", timeout=3)
    try:
        import ray  # noqa: F401
    except ImportError:
        assert found == "unknown (ray not installed: pip install 'causeway[ray]')"
    else:
        assert found.startswith("unknown (")  # nothing listens on port 9


def test_cli_status_text_and_json(stopped_run):
    command = [sys.executable, "-m", "causeway", "status", str(stopped_run)]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "stopped at step 2 on SIGUSR2" in text
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, check=True)
    data = json.loads(as_json.stdout)
    assert data["checkpoint_step"] == 2 and data["total_steps"] == 4
    command[-1] += "/nope"
    missing = subprocess.run(command, capture_output=True, text=True)
    assert missing.returncode == 2 and "is not a causeway run directory" in missing.stderr
