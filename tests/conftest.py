"""Suite-wide fixtures: the builtin corpus is built once per session into a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from causeway.data_pipeline.prepare.prepare import ensure_builtin


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory) -> Path:
    """Point CAUSEWAY_DATA_HOME at a session directory so tests never touch ~/.cache."""
    home = Path(os.environ.get("CAUSEWAY_DATA_HOME") or tmp_path_factory.mktemp("data_home"))
    os.environ["CAUSEWAY_DATA_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def builtin_dir(data_home) -> Path:
    return ensure_builtin(data_home / "builtin")
