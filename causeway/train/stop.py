"""Stopping cleanly on a signal: every rank learns of it and all stop at the same step.

A signal (Slurm's warning USR2 ahead of the time limit, SIGTERM from `scancel` or a
node shutdown) may reach some ranks and not others, or reach them in different steps.
Each rank only records it; in every step, before the optimizer, the ranks reduce the
signal number with MAX (`guard.StepGuard.judge`, in the same small all-reduce as the
step's verdict), so they all see the same answer after the same step, save one
checkpoint together and exit with `EXIT_STOPPED`. See benchmarks/stop_flag.py for the
measured cost of that read.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry". The run
# saved a committed checkpoint at the agreed step and `checkpoint.resume: auto` continues.
EXIT_STOPPED = 75
STOP_RECORD = "stop.json"


class TrainingStopped(Exception):
    """Raised after the stop checkpoint is committed; the CLI exits with EXIT_STOPPED."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"stopped at step {step} on {reason}; resume continues from there")
        self.step, self.reason = step, reason


class StopSignals:
    """Records stop signals in this process (the ranks agree on them in `guard.py`)."""

    def __init__(self, names: list[str]) -> None:
        self.received = 0
        self.previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for name in names:
            number = getattr(signal, name)
            self.previous[number] = signal.signal(number, self._record)

    def _record(self, number: int, frame) -> None:
        self.received = self.received or number

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}


def signal_name(number: int) -> str:
    return signal.Signals(number).name


def write_stop_record(run_dir: Path, step: int, reason: str) -> None:
    record = {"step": step, "reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (Path(run_dir) / STOP_RECORD).write_text(json.dumps(record) + "\n")
