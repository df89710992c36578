"""The data pipeline's public API: importable from the package, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import causeway.data_pipeline as data


def test_public_names_resolve_to_their_stage_modules() -> None:
    assert data.DataStream.__module__ == "causeway.data_pipeline.stream.stream"
    assert data.Source.__module__ == "causeway.data_pipeline.shards.sources"
    assert data.prepare_files.__module__ == "causeway.data_pipeline.prepare.prepare"
    assert set(data.__all__) >= {"DataStream", "Source", "Tokenizer", "inspect_dataset"}
    with pytest.raises(AttributeError, match="no attribute 'Lane'"):
        data.Lane  # noqa: B018


def test_tokenizer_and_rules_import_without_torch() -> None:
    code = ("import sys, causeway.data_pipeline.tokenizer, causeway.data_pipeline.objectives.rules;"
            "print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
