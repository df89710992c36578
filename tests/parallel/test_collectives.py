"""The plan's communication model (`causeway/plan/collectives.py`) predicts the
collectives a real gloo training step issues on rank 0: each kind's count and bytes."""

from __future__ import annotations

import pytest

from tests.parallel.conftest import TINY
from tests.parallel.harness import run_distributed

pytestmark = pytest.mark.distributed

# 8 rows a step, micro-batches of 2: dp_shard 2 has 2 micro-batches per rank, tp 2 and
# pp 2 have 4.
LAYOUTS = {
    "dp_shard2": ["parallel.dp_shard=2"],
    "tp2": ["parallel.tp=2", "parallel.dp_shard=1"],
    "pp2": ["parallel.pp=2", "parallel.dp_shard=1"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plan_predicts_the_collectives_of_a_real_step(layout):
    rank0, _ = run_distributed(
        "tests.parallel.workers:step_collectives", 2, "tiny-cd-flm", [*TINY, *LAYOUTS[layout]]
    )
    assert rank0["measured"] == rank0["predicted"]
    assert rank0["measured"]  # something was counted
