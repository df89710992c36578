"""`causeway launch local`: torchrun on 127.0.0.1; a real stop signal to one rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from causeway.train.stop import EXIT_STOPPED
from tests.launcher.procs import losses_by_step, rank_pids, wait_for_step

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS = 24
TINY = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.d_ff=128",
    "model.max_seq_len=64", "data.seq_len=64", "data.batch_size=4", "data.micro_batch_size=2",
    f"train.steps={STEPS}", "train.log_every=1", "train.precision=fp32", "schedule.warmup_steps=2",
    "optimizer.eps=1e-6", "checkpoint.every=100",
]  # fmt: skip


def launch(run_dir, nproc=2, extra=()) -> subprocess.Popen:
    sets = [arg for item in [*TINY, *extra] for arg in ("--set", item)]
    command = [sys.executable, "-m", "causeway", "launch", "local", "tiny-cd-flm",
               "--nproc", str(nproc), "--run-dir", str(run_dir), *sets]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_to_one_rank_stops_all_at_one_step_and_resume_is_exact(
    builtin_dir, tmp_path, signum
):
    baseline = tmp_path / "baseline"
    code, out = finish(launch(baseline))
    assert code == 0, out[-3000:]
    assert (baseline / "logs").is_dir() and list((baseline / "logs").rglob("stdout.log"))

    run = tmp_path / "run"
    proc = launch(run)
    wait_for_step(run, 3, alive=lambda: proc.poll() is None)
    signalled = time.time()
    os.kill(rank_pids()[1], signum)  # one arbitrary rank only
    code, out = finish(proc)
    assert code == EXIT_STOPPED, out[-3000:]
    stop = json.loads((run / "stop.json").read_text())
    assert stop["reason"] == signal.Signals(signum).name and 3 <= stop["step"] < STEPS
    # A DCP save is collective: it commits only if both ranks saved that same step.
    committed = run / "checkpoints" / f"step_{stop['step']}" / "COMMITTED"
    assert committed.is_file()
    print(
        f"{stop['reason']} to committed checkpoint: {committed.stat().st_mtime - signalled:.2f} s"
    )
    assert max(losses_by_step(run)) == stop["step"]

    code, out = finish(launch(run))
    assert code == 0, out[-3000:]
    assert f"resumed from {run / 'checkpoints' / ('step_' + str(stop['step']))}" in out
    expected, got = losses_by_step(baseline), losses_by_step(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step


def test_layout_that_does_not_fit_is_refused_before_start(tmp_path):
    command = [sys.executable, "-m", "causeway", "launch", "local", "tiny-cd-flm", "--nproc",
               "3", "--set", "parallel.tp=2", "--run-dir", str(tmp_path / "r")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert "world size 3 is not divisible by dp_replicate x tp x pp = 2" in result.stderr
    assert not (tmp_path / "r").exists()
