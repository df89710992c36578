"""Shared fixtures: one small builtin dataset prepared once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from causeway.data_pipeline.corpus import builtin_documents
from causeway.data_pipeline.prepare import ensure_builtin
from causeway.data_pipeline.tokenizer import Tokenizer

BUILTIN_PARAMS = {"vocab_size": 512, "val_fraction": 0.02, "docs_per_shard": 500, "seed": 0}


@pytest.fixture(scope="session")
def builtin_params() -> dict:
    """The prepare_builtin arguments of `small_builtin` (a copy: tests may not change them)."""
    return dict(BUILTIN_PARAMS)


@pytest.fixture(scope="session")
def small_builtin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stdlib-docstring corpus with a 512-token BPE, in shards of 500 documents.

    Built through `ensure_builtin` on an empty directory, which must therefore prepare it.
    """
    out = tmp_path_factory.mktemp("builtin")
    return ensure_builtin(out, **BUILTIN_PARAMS)


@pytest.fixture(scope="session")
def tokenizer(small_builtin: Path) -> Tokenizer:
    return Tokenizer.from_file(small_builtin / "tokenizer.json")


@pytest.fixture(scope="session")
def builtin_corpus() -> list[str]:
    """The builtin corpus texts (parsing the stdlib takes a couple of seconds: do it once)."""
    return builtin_documents()
