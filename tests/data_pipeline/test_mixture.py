"""Mixtures: token shares follow the weights, deterministically and resumably."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from causeway.config.schema import MixtureEntry
from causeway.data_pipeline.shards.sources import Source, as_sources
from causeway.data_pipeline.stream import DataStream

from .conftest import write_dataset
from .stream_helpers import chunks_in, same, take

ARGS = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 32,
        "batch_size": 4, "seed": 0, "readers": 2, "provenance": True}  # fmt: skip


@pytest.fixture(scope="module")
def code(small_builtin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    shards = {"train": [50, 50, 20], "val": [5]}
    return write_dataset(tmp_path_factory.mktemp("mix") / "code", small_builtin, shards, seed=9)


def mixture(uneven: Path, code: Path, web: float = 0.7, **kwargs) -> DataStream:
    sources = [Source(str(uneven), web, "web"), {"path": str(code), "weight": 1 - web}]
    return DataStream(sources, **(ARGS | kwargs))


def test_token_shares_follow_the_weights(uneven: Path, code: Path) -> None:
    s = mixture(uneven, code)
    batches = take(s, 60)
    metrics = s.metrics()
    web, other = metrics["data/tokens/web"], metrics["data/tokens/code"]
    assert abs(web / (web + other) - 0.7) < 0.02
    seen = chunks_in(batches, epoch=None)
    assert {source for source, *_ in seen} == {0, 1}
    assert metrics["data/documents/web"] == sum(1 for s, *_, c in seen if s == 0 and c == 0)
    other_weights = mixture(uneven, code, web=0.2)
    take(other_weights, 60)
    m = other_weights.metrics()
    assert abs(m["data/tokens/web"] / (m["data/tokens/web"] + m["data/tokens/code"]) - 0.2) < 0.02


def test_mixture_is_deterministic_and_resumes_exactly(uneven: Path, code: Path) -> None:
    reference = take(mixture(uneven, code), 50)
    assert same(take(mixture(uneven, code), 50), reference)
    first = mixture(uneven, code)
    take(first, 17)
    resumed = mixture(uneven, code)
    resumed.load_state_dict(first.state_dict())
    assert same(take(resumed, 33), reference[17:])
    assert resumed.metrics() == _after(uneven, code, 50)


def _after(uneven: Path, code: Path, n: int) -> dict:
    s = mixture(uneven, code)
    take(s, n)
    return s.metrics()


def test_mixture_errors(uneven: Path, code: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        as_sources([str(uneven), str(uneven)])
    with pytest.raises(ValueError, match="weight must be > 0"):
        as_sources([(str(uneven), 0.0)])
    other = write_dataset(tmp_path / "other", code, {"train": [10]})
    (other / "tokenizer.json").write_text(
        (other / "tokenizer.json").read_text().replace("<extra_id_99>", "<extra_id_x>")
    )
    with pytest.raises(ValueError, match="different tokenizers"):
        DataStream([str(uneven), str(other)], **ARGS)


def test_config_mixture_entries_are_sources() -> None:
    """`data.mixture` entries (MixtureEntry) and `Source` have the same fields; as_sources reads
    an entry like any other way of naming a dataset."""
    assert [f.name for f in fields(MixtureEntry)] == [f.name for f in fields(Source)]
    entry = MixtureEntry("/data/web/", 0.5, shards="pipe:cat {name}")
    (source,) = as_sources([entry])
    assert source == Source("/data/web/", 0.5, "web", "pipe:cat {name}")
    mapping = {"path": "/data/web/", "weight": 0.5, "shards": "pipe:cat {name}"}
    assert as_sources(entry) == [source] == as_sources([mapping])
