"""A checkpoint saved under one layout resumes under another with the losses of an
uninterrupted one-process run (fp32, 1e-5 relative): the weights are resharded and the data
stream, read by share, hands each new data-parallel rank its readers (2 -> 4 and 4 -> 2
data-parallel ranks included), so the global batches are those of the run that never stopped."""

from __future__ import annotations

import pytest

from tests.parallel.conftest import TINY
from tests.parallel.harness import run_distributed
from tests.parallel.workers import train_records

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RECIPE = "tiny-nd-mlm"
LAYOUTS = {
    "one": (1, []),
    "dp_shard2": (2, ["parallel.dp_shard=2"]),
    "dp_shard4": (4, ["parallel.dp_shard=4"]),
    "tp2": (2, ["parallel.tp=2", "parallel.dp_shard=1"]),
    "pp2": (2, ["parallel.pp=2", "parallel.dp_shard=1"]),
    "tp2_pp2": (4, ["parallel.tp=2", "parallel.pp=2", "parallel.dp_shard=1"]),
}
CHANGES = [
    ("dp_shard2", "tp2"), ("tp2_pp2", "one"), ("one", "pp2"), ("dp_shard2", "dp_shard4"),
    ("dp_shard4", "dp_shard2"),
]  # fmt: skip


def run(layout: str, overrides: list[str], run_dir: str) -> list[dict]:
    world, extra = LAYOUTS[layout]
    if world == 1:
        return train_records(RECIPE, [*overrides, *extra], run_dir)
    target = "tests.parallel.workers:train_records"
    return run_distributed(target, world, RECIPE, [*overrides, *extra], run_dir)[0]


@pytest.mark.parametrize(("before", "after"), CHANGES, ids=[f"{a}-to-{b}" for a, b in CHANGES])
def test_resume_under_another_layout(before, after, init_weights, tmp_path):
    base = [*TINY, f"checkpoint.init_from={init_weights(RECIPE)}"]
    whole = train_records(RECIPE, [*base, "train.steps=4"], str(tmp_path / "whole"))
    run_dir = str(tmp_path / "run")
    run(before, [*base, "train.steps=2", "checkpoint.every=2"], run_dir)
    resumed = run(after, [*base, "train.steps=4", "checkpoint.resume=auto"], run_dir)
    assert [r["step"] for r in resumed] == [3, 4]
    for want, got in zip(whole[2:], resumed, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-5)
