"""Faults in a real 2-process job (`causeway launch local`, gloo): a rank killed in a save,
the whole job killed before the commit, a bad step on one rank, a hung peer."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from causeway.checkpoint.commit import is_committed
from causeway.train.faults import REACHED
from tests.launcher.procs import (
    finish,
    launch,
    losses_by_step,
    rank_logs,
    rank_pids,
    wait_for_step,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS = 8
EVERY = ["checkpoint.every=2", "checkpoint.keep=3"]


@pytest.fixture(scope="module")
def baseline(builtin_dir, tmp_path_factory):
    """The losses of a run that was never interrupted."""
    run = tmp_path_factory.mktemp("baseline")
    code, out = finish(launch(run, STEPS, extra=EVERY))
    assert code == 0, out[-3000:]
    return losses_by_step(run)


def assert_same_losses(run, expected) -> None:
    got = losses_by_step(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step


def restart_resumes_from_step_2(run, expected) -> None:
    step_4 = run / "checkpoints" / "step_4"
    assert not is_committed(step_4)  # the partial save never reads as complete
    code, out = finish(launch(run, STEPS, extra=EVERY))
    assert code == 0, out[-3000:]
    assert f"resumed from {run / 'checkpoints' / 'step_2'}" in out
    assert_same_losses(run, expected)


@pytest.mark.parametrize("save", ["sync", "async"])
def test_rank_killed_during_a_save_resumes_from_the_previous_commit(baseline, tmp_path, save):
    run = tmp_path / "run"
    extra = [*EVERY, f"checkpoint.async_save={save == 'async'}"]
    code, out = finish(launch(run, STEPS, extra=extra, faults="kill_in_save@4:1"))
    assert code != 0, out[-3000:]
    assert "TEST FAULTS ACTIVE" in rank_logs(run)
    assert is_committed(run / "checkpoints" / "step_2")
    restart_resumes_from_step_2(run, baseline)


def test_whole_job_killed_between_data_files_and_commit_marker(baseline, tmp_path):
    run = tmp_path / "run"
    proc = launch(run, STEPS, extra=EVERY, faults="stall_in_save@4:0", new_session=True)
    deadline = time.monotonic() + 300
    while not (run / REACHED).exists():
        assert proc.poll() is None and time.monotonic() < deadline, finish(proc)[1][-3000:]
        time.sleep(0.2)
    step_4 = run / "checkpoints" / "step_4"
    assert (step_4 / ".metadata").is_file()  # every data file is written, not the marker
    os.killpg(proc.pid, signal.SIGKILL)
    finish(proc)
    (run / REACHED).unlink()
    restart_resumes_from_step_2(run, baseline)


def test_bad_step_on_one_rank_is_skipped_by_every_rank(builtin_dir, tmp_path):
    one = tmp_path / "one"
    code, out = finish(launch(one, STEPS, nproc=1, faults="inf_grad@3"))
    assert code == 0, out[-3000:]
    two = tmp_path / "two"
    code, out = finish(launch(two, STEPS, faults="inf_grad@3:1"))  # rank 1 only
    assert code == 0, out[-3000:]
    assert rank_logs(two).count("step 3 skipped: non-finite loss or gradient norm") == 1
    # Had one rank applied step 3, its shard of the weights would differ from here on.
    expected, got = losses_by_step(one), losses_by_step(two)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-5), step


def test_hung_peer_makes_the_others_fail_within_the_timeout(builtin_dir, tmp_path):
    run = tmp_path / "run"
    proc = launch(run, 400, extra=["train.collective_timeout_s=5"])
    try:
        wait_for_step(run, 3, alive=lambda: proc.poll() is None)
        pids = rank_pids(run)
        os.kill(pids[1], signal.SIGSTOP)
        began = time.monotonic()
        while running(pids[0]) and time.monotonic() - began < 90:
            time.sleep(0.2)
        waited = time.monotonic() - began
        # torchrun would wait out its grace period for the stopped rank, which a SIGTERM
        # cannot reach: the test ends it (what the claim is about is rank 0's exit).
        with contextlib.suppress(ProcessLookupError):  # torchrun may have ended it first
            os.kill(pids[1], signal.SIGKILL)
        code, out = finish(proc, timeout=120)
    finally:
        for pid in rank_pids(run).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert code != 0
    logs = rank_logs(run)
    assert "rank 0: a collective waited more than train.collective_timeout_s=5 s" in logs, out
    print(f"hung peer: rank 0 exited {waited:.1f} s after its peer's SIGSTOP")
    assert waited < 60, out[-3000:]


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child its parent has not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
