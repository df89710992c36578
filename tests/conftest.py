"""Suite-wide fixtures: the builtin corpus is built once per session into a temp dir, and
checkpoints of every architecture (2 steps of a 1-layer model) for the tests that read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from causeway.config import load_config
from causeway.data_pipeline.prepare.prepare import ensure_builtin
from causeway.train.trainer import run_training


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, present with `-n`
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":  # another --dist, asked for by name
        return None
    from tests.scheduling import SharedUnitsScheduling

    return SharedUnitsScheduling(config, log)


def pytest_configure(config) -> None:
    # Two workers on two cores: torch's own threads would oversubscribe them.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory) -> Path:
    """Point CAUSEWAY_DATA_HOME at a session directory so tests never touch ~/.cache."""
    home = Path(os.environ.get("CAUSEWAY_DATA_HOME") or tmp_path_factory.mktemp("data_home"))
    os.environ["CAUSEWAY_DATA_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def builtin_dir(data_home) -> Path:
    return ensure_builtin(data_home / "builtin")


CHECKPOINT_SETS = ["model.n_layers=1", "model.d_model=64", "model.d_ff=128", "train.steps=2",
                   "checkpoint.every=2", "train.log_every=1"]  # fmt: skip
CHECKPOINT_RECIPES = ("tiny-cd-flm", "tiny-nd-mlm", "tiny-nd-plm", "tiny-ed-plm", "tiny-bi-mlm")


@pytest.fixture(scope="session")
def checkpoints(builtin_dir, tmp_path_factory) -> dict:
    made = {}
    for recipe in CHECKPOINT_RECIPES:
        run = tmp_path_factory.mktemp(recipe)
        run_training(load_config(recipe, CHECKPOINT_SETS), run)
        made[recipe] = run / "checkpoints" / "step_2"
    return made
