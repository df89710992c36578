"""The uninterrupted 2-process run (`causeway launch local`, TINY, 24 steps) whose losses
the launcher tests compare theirs with: made once, for the local, Slurm and Ray tests."""

from __future__ import annotations

import pytest

from tests.launcher.procs import finish, launch, losses_by_step

BASELINE_STEPS = 24


@pytest.fixture(scope="session")
def baseline_losses(tmp_path_factory, builtin_dir) -> dict[int, float]:
    run = tmp_path_factory.mktemp("launch-baseline") / "run"
    code, out = finish(launch(run, BASELINE_STEPS))
    assert code == 0, out[-3000:]
    assert list((run / "logs").rglob("stdout.log"))  # torchrun's per-rank logs are kept
    return losses_by_step(run)
