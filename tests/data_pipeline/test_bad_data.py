"""Bad data is logged with the shard's name, counted and skipped; nothing readable is an error."""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest

from causeway.data_pipeline.shards.tar_writer import TarShardWriter
from causeway.data_pipeline.stream import DataStream

from .conftest import write_dataset
from .stream_helpers import chunks_in, take

ARGS = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 256,
        "batch_size": 2, "seed": 0, "readers": 1, "provenance": True}  # fmt: skip


def _offsets(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as archive:
        return archive.getmembers()


def _rewrite_with_bad_samples(path: Path) -> dict:
    """Samples 3 (odd byte count) and 6 (no tokens field) cannot be decoded."""
    with tarfile.open(path) as archive:
        members = [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()]
    members[3] = (members[3][0], members[3][1] + b"\x01")
    members[6] = (members[6][0].replace("tokens.u16", "json"), b"{}")
    writer = TarShardWriter(path)
    for name, data in members:
        writer.add(name, data)
    size, digest = writer.close()
    return {"bytes": size, "sha256": digest}


@pytest.fixture
def damaged(small_builtin: Path, tmp_path: Path) -> Path:
    data = write_dataset(tmp_path / "bad", small_builtin, {"train": [10] * 6})
    shard = [data / f"train-{k:06d}.tar" for k in range(6)]
    cut = _offsets(shard[1])[4].offset_data + 10  # inside sample 4's data
    shard[1].write_bytes(shard[1].read_bytes()[:cut])
    raw = bytearray(shard[2].read_bytes())
    raw[_offsets(shard[2])[6].offset + 2] ^= 1  # a name byte of sample 6's header
    shard[2].write_bytes(bytes(raw))
    shard[3].unlink()
    fixed = _rewrite_with_bad_samples(shard[4])
    raw = bytearray(shard[5].read_bytes())
    raw[_offsets(shard[5])[2].offset_data] ^= 1  # a token of sample 2: valid, but changed
    shard[5].write_bytes(bytes(raw))
    index = json.loads((data / "index.json").read_text())
    index["splits"]["train"]["shards"][4].update(fixed)
    (data / "index.json").write_text(json.dumps(index))
    return data


EXPECTED = {"data/bad_shards": 2, "data/missing_shards": 1, "data/bad_samples": 2,
            "data/sha256_mismatches": 1}  # fmt: skip


def test_bad_data_is_logged_counted_and_skipped(
    damaged: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="causeway.data"):
        s = DataStream(damaged, loop=False, **ARGS)
        batches = list(s)
    documents = {(shard, sample) for _, shard, sample, _ in chunks_in(batches)}
    per_shard = [sum(1 for shard, _ in documents if shard == k) for k in range(6)]
    assert per_shard == [10, 4, 6, 0, 8, 10]
    metrics = s.metrics()
    assert {k: metrics[k] for k in EXPECTED} == EXPECTED
    log = caplog.text
    assert "train-000001.tar" in log and "truncated" in log
    assert "train-000002.tar" in log and "checksum" in log
    assert "train-000003.tar" in log
    assert "train-000004.tar: sample 3" in log and "train-000004.tar: sample 6" in log
    assert "train-000005.tar: sha256" in log


def test_bad_data_counts_survive_resumption(damaged: Path) -> None:
    whole = DataStream(damaged, loop=False, **ARGS)
    total = len(list(whole))
    for stop in (2, 5, total - 1):
        first = DataStream(damaged, loop=False, **ARGS)
        take(first, stop)
        resumed = DataStream(damaged, loop=False, **ARGS)
        resumed.load_state_dict(first.state_dict())
        assert len(list(resumed)) == total - stop
        assert resumed.metrics() == whole.metrics()


def test_nothing_readable_fails_at_start_naming_the_dataset(damaged: Path) -> None:
    for shard in damaged.glob("train-*.tar"):
        shard.write_bytes(b"not a tar file at all" * 30)
    with pytest.raises(RuntimeError, match=r"dataset 'bad' .*nothing is readable"):
        DataStream(damaged, **ARGS)


def test_data_vanishing_during_a_run_is_an_error_not_a_hang(damaged: Path) -> None:
    s = DataStream(damaged, **(ARGS | {"readers": 2}))
    for shard in damaged.glob("train-*.tar"):
        shard.unlink()
    with pytest.raises(RuntimeError, match="dataset 'bad'.*two epochs in a row"):
        take(s, 100)


def test_sha256_in_the_index_is_that_of_the_file(uneven: Path) -> None:
    index = json.loads((uneven / "index.json").read_text())
    for shard in index["splits"]["train"]["shards"]:
        data = (uneven / shard["name"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest() and shard["bytes"] == len(data)
    assert np.dtype(index["dtype"]) == np.uint16
