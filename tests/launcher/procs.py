"""Find real training processes from outside, to signal them as a scheduler would."""

from __future__ import annotations

import json
import time
from pathlib import Path


def rank_pids() -> dict[int, int]:
    """PID of every live `causeway train` process on this machine, by its RANK."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"causeway" not in cmdline or b"train" not in cmdline or b"-m" not in cmdline:
            continue
        if b"torch.distributed.run" in cmdline:
            continue  # the torchrun agent, not a rank
        env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"RANK" in env:
            found[int(env[b"RANK"])] = int(proc.name)
    return found


def logged_steps(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written
    return [r for r in records if "loss" in r]


def wait_for_step(run_dir: Path, step: int, timeout: float = 300.0, alive=None) -> None:
    """Until metrics.jsonl has logged `step` (alive(): False stops waiting early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = logged_steps(run_dir)
        if records and records[-1]["step"] >= step:
            return
        if alive is not None and not alive():
            raise AssertionError(f"the run ended before step {step}")
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} did not reach step {step} in {timeout} s")


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """The last logged loss of every step (a resumed run logs its steps again)."""
    return {r["step"]: r["loss"] for r in logged_steps(run_dir)}
