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
from tests.launcher.procs import finish, launch, losses_by_step, rank_pids, wait_for_step

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS = 24


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_to_one_rank_stops_all_at_one_step_and_resume_is_exact(
    baseline_losses, tmp_path, signum
):
    run = tmp_path / "run"
    proc = launch(run, steps=STEPS)
    wait_for_step(run, 3, alive=lambda: proc.poll() is None)
    signalled = time.time()
    os.kill(rank_pids(run)[1], signum)  # one arbitrary rank only
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

    code, out = finish(launch(run, steps=STEPS))
    assert code == 0, out[-3000:]
    assert f"resumed from {run / 'checkpoints' / ('step_' + str(stop['step']))}" in out
    expected, got = baseline_losses, losses_by_step(run)
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
