"""A data worker that keeps dying ends the run with one clear error, not a hang."""

from __future__ import annotations

import os
import signal

import pytest

from causeway.checkpoint.discovery import newest_committed
from causeway.config import load_config
from causeway.data_pipeline.stream import processes
from causeway.train.failures import DataWorkersFailed
from causeway.train.trainer import Trainer

SETS = ["train.log_every=1", "train.precision=fp32", "train.steps=12", "checkpoint.every=2",
        "data.num_workers=1", "data.prefetch_factor=1"]  # fmt: skip


class KillWorkers:
    """At step `at` (and with `again`, at every step after it) SIGKILLs every live data
    worker, so that also those restarted die."""

    def __init__(self, at: int, again: bool) -> None:
        self.at, self.again = at, again

    def on_log(self, step: int, figures: dict) -> None:
        if step == self.at or (self.again and step > self.at):
            for worker in list(processes._LIVE):
                if worker.pid is not None:
                    os.kill(worker.pid, signal.SIGKILL)

    def on_checkpoint(self, step, path) -> None: ...


def test_workers_that_keep_dying_fail_the_run_naming_the_checkpoint(builtin_dir, tmp_path):
    cfg = load_config("tiny-nd-mlm", [*SETS, "data.worker_restarts=0"])
    t = Trainer(cfg, tmp_path / "run", hooks=[KillWorkers(at=4, again=True)])
    t.setup()
    with pytest.raises(DataWorkersFailed) as failure:
        t.fit()
    message = str(failure.value)
    assert message.startswith("data.num_workers: data worker 0 (pid ")
    assert "SIGKILL" in message and "it was reading " in message and ".tar" in message
    assert "at most 0 restarts" in message
    newest = newest_committed(tmp_path / "run")
    assert newest is not None and message.endswith(f"the newest committed checkpoint is {newest}")


def test_a_killed_worker_is_restarted_and_the_run_finishes(builtin_dir, tmp_path, caplog):
    cfg = load_config("tiny-nd-mlm", SETS)
    t = Trainer(cfg, tmp_path / "run", hooks=[KillWorkers(at=4, again=False)])
    t.setup()
    with caplog.at_level("WARNING"):
        records = t.fit()
    assert [r["step"] for r in records] == list(range(1, 13))
    restarts = [r.getMessage() for r in caplog.records if "restarted from" in r.getMessage()]
    assert len(restarts) == 1 and "SIGKILL" in restarts[0]
