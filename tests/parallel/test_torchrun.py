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


SEED_LAYOUTS = {
    "tp2": (2, ["parallel.tp=2", "parallel.dp_shard=1"]),
    "pp2": (2, ["parallel.pp=2", "parallel.dp_shard=1"]),
    "dp_shard2": (2, ["parallel.dp_shard=2"]),
    "tp2_pp2": (4, ["parallel.tp=2", "parallel.pp=2", "parallel.dp_shard=1"]),
}


def cli_losses(run_dir, nproc: int, extra: list[str]) -> list[float]:
    """`causeway train` from the CLI, as a user runs it: no weights loaded, only the seed."""
    sets = [arg for item in [*TINY, "train.seed=1234", *extra] for arg in ("--set", item)]
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                     "--master_addr", "127.0.0.1", "--master_port", str(free_port())]  # fmt: skip
    command = [*launcher, "-m", "causeway", "train", "tiny-nd-plm", "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, *sets], capture_output=True, text=True, env=env,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records]


@pytest.fixture(scope="module")
def one_process_losses(builtin_dir, tmp_path_factory):
    return cli_losses(tmp_path_factory.mktemp("seed") / "one", 1, [])


@pytest.mark.parametrize("layout", list(SEED_LAYOUTS))
def test_one_seed_trains_the_same_under_every_layout(one_process_losses, layout, tmp_path):
    nproc, extra = SEED_LAYOUTS[layout]
    got = cli_losses(tmp_path / "run", nproc, extra)
    assert len(got) == len(one_process_losses) == 3
    assert got == pytest.approx(one_process_losses, rel=1e-5), layout
