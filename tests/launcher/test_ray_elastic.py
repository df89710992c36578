"""`causeway launch ray --min-workers`: a node lost mid-run, the run continues on fewer
workers with the losses of an uninterrupted run. Its own module: it changes the cluster's
nodes, and its cluster must not live beside test_ray.py's (`ray stop` stops every one)."""

from __future__ import annotations

import json

import pytest

from tests.launcher.procs import finish, wait_for_step
from tests.launcher.ray_cluster import (
    RayCluster,
    assert_same_losses,
    kill,
    newest_raylet_pid,
    ray_launch,
    require_ray,
    running,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_fewer_workers_when_capacity_is_lost(baseline_losses, tmp_path):
    require_ray()
    head = RayCluster(1)
    try:
        continue_on_fewer(head, baseline_losses, tmp_path)
    finally:
        head.stop()


def continue_on_fewer(head: RayCluster, baseline, tmp_path) -> None:
    head.add_node(1)
    run = tmp_path / "run"
    proc = ray_launch(run, head.address, "--workers", "2", "--min-workers", "1")
    running(proc, lambda: wait_for_step(run, 4, alive=lambda: proc.poll() is None))
    kill(newest_raylet_pid())  # the second node is gone, and its worker with it
    code, out = finish(proc)
    assert code == 0, out[-4000:]
    attempts = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert [a["world_size"] for a in attempts] == [2, 1]
    # The global batch is a function of the data position alone: on 1 worker the run
    # reads exactly the documents 2 workers would have, so its losses are the baseline's.
    assert_same_losses(run, baseline, after=0)
