"""The gradient norm takes a fixed number of all-reduces, however many parameter tensors
the model has, and equals the norm made whole one tensor at a time."""

from __future__ import annotations

import pytest

from tests.parallel.conftest import TINY
from tests.parallel.harness import run_distributed

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# layout: (processes, overrides, all-reduces of the norm). The tiny model has 38
# gradient tensors (19 per stage under pp 2); eight layers have 74.
CASES = {
    "dp_shard2": (2, ["parallel.dp_shard=2"], 1),
    "dp_shard2_8_layers": (2, ["parallel.dp_shard=2", "model.n_layers=8"], 1),
    # + one for the norm gains' gradients, which sequence parallelism leaves Partial.
    "tp2": (2, ["parallel.tp=2", "parallel.dp_shard=1"], 2),
    "pp2": (2, ["parallel.pp=2", "parallel.dp_shard=1"], 1),
    # Two sharded mesh dims (FSDP's _StridedShard on top of tp's Shard).
    "dp_shard2_tp2": (4, ["parallel.dp_shard=2", "parallel.tp=2"], 1),
}


@pytest.mark.parametrize("layout", CASES)
def test_grad_norm_takes_a_fixed_number_of_all_reduces(layout):
    world, extra, all_reduces = CASES[layout]
    results = run_distributed(
        "tests.parallel.workers:grad_norm_collectives", world, "tiny-cd-flm", [*TINY, *extra]
    )
    for rank in results:
        assert rank["collectives"] == all_reduces, rank
        assert rank["norm"] == pytest.approx(rank["reference"], rel=1e-12), rank
    assert len({rank["norm"] for rank in results}) == 1, results
