"""`causeway launch slurm --dry-run` and its refusals: what is rendered, what is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.launcher.slurm_cluster import require_cluster

PAPER_64_GPUS = [
    "paper-4.8b-nd-mlm", "--nodes", "8", "--gpus-per-node", "8", "--partition", "gpu",
    "--time", "48:00:00", "--set", "parallel.tp=4", "--set", "parallel.pp=2",
]  # fmt: skip


def causeway(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "causeway", "launch", "slurm", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env or dict(os.environ))


def test_dry_run_renders_the_64_gpu_paper_job_and_submits_nothing(tmp_path):
    run = tmp_path / "run"
    flags = ["--signal-lead", "300", "--max-requeues", "5", "--nccl-socket-ifname", "ib0"]
    result = causeway(*PAPER_64_GPUS, "--run-dir", str(run), *flags, "--dry-run")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ["#SBATCH --nodes=8", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --time=48:00:00", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@300", "MAX_REQUEUES=5", "export NCCL_SOCKET_IFNAME=ib0",
                 "export PYTHONFAULTHANDLER=1", "TORCH_NCCL_DUMP_ON_TIMEOUT",
                 "--nproc-per-node 8", '--nnodes "$SLURM_NNODES"', "--kill-on-bad-exit=1",
                 'scontrol show hostnames "$SLURM_JOB_NODELIST"',
                 'scontrol requeue "$SLURM_JOB_ID"',
                 "PORT=$((20000 + SLURM_JOB_ID % 20000))"]:  # fmt: skip
        assert line in script, line
    assert not re.search(r"\{\{\w+\}\}", script)  # every placeholder filled
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid bash
    assert not run.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--nodes", "2", "--gpus-per-node", "8", "--set", "parallel.tp=3"], "world size 16"),
        (["--nodes", "0", "--gpus-per-node", "8"], "--nodes"),
        (["--nodes", "1", "--gpus-per-node", "0", "--signal-lead", "-1"], "--signal-lead"),
    ],
)
def test_bad_layouts_are_one_line_before_anything_is_written(tmp_path, flags, message):
    result = causeway("tiny-cd-flm", *flags, "--run-dir", str(tmp_path / "r"), "--dry-run")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_no_sbatch_on_the_path_is_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # python is called by absolute path
    result = causeway("tiny-cd-flm", "--nodes", "1", "--gpus-per-node", "0", "--run-dir",
                      str(tmp_path / "r"), env=env)  # fmt: skip
    assert result.returncode == 2
    assert "'sbatch' is not on the PATH" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--nodes", "1", "--gpus-per-node", "1"], "the partition has no GPUs"),
        (
            ["--nodes", "4", "--gpus-per-node", "0", "--set", "data.micro_batch_size=2"],
            "--nodes 4 but the partition has only 2",
        ),
        (["--nodes", "1", "--gpus-per-node", "0", "--partition", "nope"], "partition 'nope'"),
    ],
)
def test_what_the_cluster_cannot_run_is_refused_before_submission(tmp_path, flags, message):
    env = require_cluster()
    result = causeway("tiny-cd-flm", *flags, "--run-dir", str(tmp_path / "r"), env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
