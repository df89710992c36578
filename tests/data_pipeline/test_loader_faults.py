"""Loader faults with real processes, signals and files: a worker killed with SIGKILL is
restarted from its readers' state (the batches stay those of a run without the fault) or, dying
again and again, fails naming the worker, the signal and the shard; a shard made unreadable in
the middle of a run is reported, skipped and counted. Every test has a deadline: a hang fails it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from causeway.data_pipeline.shards.index import read_index
from causeway.data_pipeline.stream import DataStream, LoaderWorkerDied

from .conftest import write_dataset
from .shard_faults import CUT_SAMPLE, FAULTS, read_with_fault
from .stream_helpers import chunks_in, same, take

REPO = Path(__file__).resolve().parents[2]
# Batches of about 1 MB: a worker blocked in the middle of sending one is what gets killed.
LARGE = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 2048,
         "batch_size": 8, "readers": 2, "seed": 4, "provenance": True}  # fmt: skip
SMALL = {"split": "train", "objective": "span_corruption", "arch": "encoder_decoder",
         "seq_len": 48, "batch_size": 2, "seed": 5, "readers": 2, "provenance": True}  # fmt: skip


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (TimeoutError in the main thread) instead of hanging."""

    def hung(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: the stream hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def worker_process(worker: int) -> multiprocessing.Process:
    (process,) = [p for p in multiprocessing.active_children()
                  if p.name == f"causeway-data-worker-{worker}"]  # fmt: skip
    return process


def kill(worker: int) -> int:
    process = worker_process(worker)
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=10)
    assert process.exitcode == -signal.SIGKILL
    return process.pid


def test_killed_workers_are_restarted_and_no_document_is_lost_or_repeated(
    small_builtin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker 1 is killed while blocked halfway through sending a batch (the main process
    busy elsewhere), worker 0 right after a batch: the batches, every (document, chunk) and
    the metrics are those of the stream without workers."""
    reference_stream = DataStream(small_builtin, num_workers=0, **LARGE)
    reference = take(reference_stream, 24)
    stream = DataStream(small_builtin, num_workers=2, **LARGE)
    with deadline(120), caplog.at_level(logging.WARNING, logger="causeway.data"):
        got = take(stream, 3)
        time.sleep(2)  # the workers fill their pipes and block in the middle of a batch
        first = kill(1)
        time.sleep(0.5)  # the death happens while the consumer is not reading
        got += take(stream, 9)
        second = kill(0)
        got += take(stream, 12)
    assert same(got, reference)
    assert chunks_in(got, epoch=None) == chunks_in(reference, epoch=None)
    assert stream.metrics() == reference_stream.metrics()
    warnings = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert len(warnings) == 2, warnings
    for message, worker, pid in zip(warnings, (1, 0), (first, second), strict=True):
        assert f"data worker {worker} (pid {pid}) of rank 0 died: killed by signal SIGKILL" in (
            message
        )
        assert f"{small_builtin}/train-" in message and ".tar from sample" in message
        assert "restarted from its readers' state" in message
    stream.close()


def test_a_worker_that_keeps_dying_fails_clearly_and_the_state_stays_exact(uneven: Path) -> None:
    """No restart allowed: the death is LoaderWorkerDied naming the worker, its signal and
    its shard; every batch given before is right, and the stream (next() starts new workers)
    or a stream resumed from its state goes on exactly."""
    reference = take(DataStream(uneven, num_workers=0, **SMALL), 30)
    stream = DataStream(uneven, num_workers=2, worker_restarts=0, **SMALL)
    got = take(stream, 4)
    pid = kill(0)
    with deadline(60), pytest.raises(LoaderWorkerDied) as raised:
        while True:  # batches already in the pipe still come: they are complete
            got.append(next(stream))
    message = str(raised.value)
    assert f"data worker 0 (pid {pid}) of rank 0 died: killed by signal SIGKILL" in message
    assert f"{uneven}/train-" in message and "(reader 0, dataset 'uneven')" in message
    assert f"giving up at batch {len(got)}" in message
    assert raised.value.death.signal_name == "SIGKILL"
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("causeway")]
    assert same(got, reference[: len(got)])
    with deadline(60):
        got += take(stream, 6)
    assert same(got, reference[: len(got)])
    stream.close()
    resumed = DataStream(uneven, num_workers=0, **SMALL)
    resumed.load_state_dict(stream.state_dict())
    assert same(take(resumed, 30 - len(got)), reference[len(got) :])


def test_an_error_in_a_worker_is_raised_as_it_is(uneven: Path, tmp_path: Path) -> None:
    """Not a death: the worker's own exception (every shard gone) reaches the consumer."""
    data = tmp_path / "copy"
    shutil.copytree(uneven, data)
    stream = DataStream(data, num_workers=2, **SMALL)
    take(stream, 1)
    for shard in data.glob("train-*.tar"):
        shard.unlink()
    with deadline(60), pytest.raises(RuntimeError, match="two epochs in a row") as raised:
        take(stream, 10_000)
    assert not isinstance(raised.value, LoaderWorkerDied)
    assert any("raised in data worker" in note for note in raised.value.__notes__)


SCRIPT = """
import os, sys
from pathlib import Path
from causeway.data_pipeline.stream import DataStream
stream = DataStream(Path(sys.argv[1]), num_workers=2, split="train", objective="full_lm",
                    arch="decoder", seq_len=64, batch_size=2, readers=2)
next(stream)
print(" ".join(str(p.pid) for p in __import__("multiprocessing").active_children()), flush=True)
if sys.argv[2] == "wait":
    sys.stdin.read()
"""


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", SCRIPT, *args]


def test_a_process_that_exits_without_closing_its_stream_does_not_hang(uneven: Path) -> None:
    """Workers ignore SIGTERM (the trainer stops them after its stop checkpoint), which is
    what multiprocessing sends them at exit: they are killed before that."""
    done = subprocess.run(_command(str(uneven), "exit"), cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 2


def test_workers_of_a_killed_process_exit_by_themselves(uneven: Path) -> None:
    parent = subprocess.Popen(_command(str(uneven), "wait"), cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(1)  # the workers fill their pipes and wait
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        end = time.monotonic() + 30
        while time.monotonic() < end and any(_running(p) for p in pids):
            time.sleep(0.2)
        assert not any(_running(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has exited


# -- shards made unreadable in the middle of a run ------------------------------------------------

SHARD_DOCS = [15] * 8


@pytest.fixture
def eight_shards(small_builtin: Path, tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "eight", small_builtin, {"train": SHARD_DOCS})


def _run_without_dac_override(data: Path, fault: str, workers: int, log: Path) -> dict:
    """Root reads any file; a process without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    (setpriv) obeys permissions like any user's."""
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions do not stop reading")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    command = [*prefix, sys.executable, "-m", "tests.data_pipeline.shard_faults", str(data),
               fault, str(workers), str(log)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_shard_unreadable_mid_run_is_reported_skipped_and_counted(
    eight_shards: Path, tmp_path: Path, fault: str, workers: int
) -> None:
    log = tmp_path / "data.log"
    with deadline(150):
        if fault == "no_permission":
            result = _run_without_dac_override(eight_shards, fault, workers, log)
        else:
            result = read_with_fault(eight_shards, fault, workers, log)
    shard, name = result["shard"], result["name"]
    kept = CUT_SAMPLE if fault == "truncated" else 0
    expected = [kept if k == shard else n for k, n in enumerate(SHARD_DOCS)]
    assert result["documents"] == expected  # every other document read, once
    assert result["repeated"] == 0
    counter = "data/bad_shards" if fault == "truncated" else "data/missing_shards"
    bad = {
        k: v
        for k, v in result["metrics"].items()
        if k
        in ("data/bad_shards", "data/missing_shards", "data/bad_samples", "data/sha256_mismatches")
    }
    assert bad == {"data/bad_shards": 0, "data/missing_shards": 0, "data/bad_samples": 0,
                   "data/sha256_mismatches": 0} | {counter: 1}  # fmt: skip
    text = log.read_text()
    assert str(eight_shards / name) in text
    why = {
        "directory": "Is a directory",
        "dangling_symlink": "No such file",
        "no_permission": "Permission denied",
        "truncated": "truncated inside a member",
    }
    assert why[fault] in text
    assert ("rest of the shard skipped" if fault == "truncated" else "unreadable, skipped") in text
    assert len(read_index(eight_shards)["splits"]["train"]["shards"]) == len(SHARD_DOCS)
