"""The uninterrupted 2-process run that the Ray tests compare their losses with."""

from __future__ import annotations

import pytest

from tests.launcher.procs import finish, launch, losses_by_step
from tests.launcher.ray_cluster import STEPS


@pytest.fixture(scope="session")
def ray_baseline(tmp_path_factory, builtin_dir):
    """2 processes, the same layout Ray's 2 workers get."""
    run = tmp_path_factory.mktemp("ray-baseline") / "run"
    code, out = finish(launch(run, STEPS, extra=["checkpoint.every=3"]))
    assert code == 0, out[-3000:]
    return losses_by_step(run)
