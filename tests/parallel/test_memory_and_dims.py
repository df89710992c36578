"""Sharded data parallelism holds 1/N of the state per rank; bad layouts are refused."""

from __future__ import annotations

import pytest

from causeway.config import ConfigError, load_config
from causeway.config.loading import CONFIG_DIR
from causeway.parallel.dims import ParallelDims
from tests.parallel.conftest import TINY
from tests.parallel.harness import run_distributed
from tests.parallel.workers import local_state_bytes


@pytest.mark.distributed
def test_dp_shard_holds_one_nth_of_parameters_and_optimizer_state(builtin_dir):
    single = local_state_bytes("tiny-cd-flm", TINY)
    ranks = run_distributed(
        "tests.parallel.workers:local_state_bytes", 2, "tiny-cd-flm", [*TINY, "parallel.dp_shard=2"]
    )
    for rank in ranks:
        for key in ("parameters", "optimizer"):
            # FSDP pads each parameter to a multiple of the world size: allow a little.
            assert rank[key] == pytest.approx(single[key] / 2, rel=0.01), key
    assert single["optimizer"] == 2 * single["parameters"]  # AdamW: exp_avg, exp_avg_sq


def dims(world: int, *sets: str) -> ParallelDims:
    return ParallelDims.from_config(load_config("tiny-cd-flm", [*TINY, *sets]), world)


def test_dp_shard_fills_the_world():
    assert dims(8, "parallel.tp=2").dp_shard == 4
    assert dims(8, "parallel.tp=2", "parallel.pp=2").dp == 2


@pytest.mark.parametrize(
    ("world", "sets", "message"),
    [
        (4, ["parallel.dp_shard=3"], "but the world size is 4"),
        (3, ["parallel.tp=2"], "not divisible by dp_replicate x tp x pp"),
        (4, ["parallel.tp=4"], r"model.n_kv_heads \(2\) is not divisible by parallel.tp 4"),
        (8, ["parallel.pp=8"], r"model.n_layers \(4\) is not divisible by pp x virtual_stages"),
        (
            4,
            ["parallel.pp=2", "parallel.virtual_stages=4", "parallel.dp_shard=2"],
            "not divisible by pp x virtual_stages = 8",
        ),
        (8, ["data.batch_size=4"], r"data.batch_size \(4\) is not divisible by data-parallel size"),
        (1, ["parallel.tp=0"], "parallel.tp must be >= 1"),
    ],
)
def test_bad_layouts_are_refused_with_the_reason(world, sets, message):
    with pytest.raises(ConfigError, match=message):
        dims(world, *sets)


def test_encoder_decoder_pipeline_is_refused():
    cfg = load_config("tiny-ed-mlm", [*TINY, "data.inputs_length=64", "parallel.pp=2"])
    with pytest.raises(ConfigError, match="pipeline parallelism is not supported for arch"):
        ParallelDims.from_config(cfg, 2)


# The paper recipes set their micro-batch (they accumulate); every other recipe leaves it.
UNSET_MICRO = sorted(
    p.stem for p in CONFIG_DIR.glob("*.yaml") if "micro_batch_size" not in p.read_text()
)


@pytest.mark.parametrize("recipe", UNSET_MICRO)
def test_unset_micro_batch_is_each_data_parallel_ranks_share(recipe):
    """Adding data parallelism to a recipe needs no other change: no accumulation."""
    cfg = load_config(recipe, ["parallel.dp_shard=2", "parallel.tp=1", "parallel.pp=1"])
    ParallelDims.from_config(cfg, 2)
    assert cfg.data.micro_batch_size == cfg.data.batch_size // 2
