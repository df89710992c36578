"""The real launcher path: `torchrun -m causeway train` with 2 gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.parallel.conftest import TINY
from tests.parallel.harness import free_port

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_torchrun_trains_and_logs_once(builtin_dir, tmp_path):
    run_dir = tmp_path / "run"
    sets = [
        arg for item in [*TINY, "parallel.tp=2", "parallel.dp_shard=1"] for arg in ("--set", item)
    ]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "causeway", "train", "tiny-nd-plm", "--run-dir", str(run_dir), *sets,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert result.stdout.count("parameters, tp=2") == 1
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert (run_dir / "checkpoints" / "step_3" / "COMMITTED").is_file()


def test_compiled_blocks_match_eager(builtin_dir, tmp_path):
    from tests.parallel.workers import train_records

    eager = train_records("tiny-cd-flm", [*TINY, "train.steps=2"], str(tmp_path / "eager"))
    compiled = train_records(
        "tiny-cd-flm", [*TINY, "train.steps=2", "parallel.compile=true"], str(tmp_path / "c")
    )
    for a, b in zip(eager, compiled, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
