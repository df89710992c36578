from __future__ import annotations

import shutil
from pathlib import Path

from causeway.data_pipeline.shards.inspection import inspect_dataset


def test_inspect_prints_counts_and_decoded_documents(
    small_builtin: Path, builtin_corpus: list[str]
) -> None:
    report = inspect_dataset(small_builtin, samples=2)
    assert "format    tokens (uint16 ids), vocabulary 512" in report
    assert "train     5 shards, 2,185 documents, 692,606 tokens" in report
    assert "val       1 shards, 56 documents" in report
    first = builtin_corpus[0][:60].replace("\n", "\\n")
    assert "[train-000000.tar #0, " in report and first in report
    assert report.count("\n  [train-") == 2


def test_verify_finds_damaged_shards(uneven: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(uneven, tmp_path / "copy")
    assert "verify train: 7 of 7 shards ok" in inspect_dataset(copy, samples=0, verify=True)
    (copy / "train-000002.tar").unlink()
    raw = bytearray((copy / "train-000004.tar").read_bytes())
    raw[600] ^= 1  # inside the first document's ids: still a valid tar
    (copy / "train-000004.tar").write_bytes(bytes(raw))
    data = (copy / "train-000005.tar").read_bytes()
    (copy / "train-000005.tar").write_bytes(data[: len(data) // 2 + 100])  # inside a member
    report = inspect_dataset(copy, samples=0, verify=True)
    assert "verify train: 4 of 7 shards ok" in report
    assert "train-000002.tar: missing or unreadable" in report
    assert "train-000004.tar: sha256" in report
    assert "train-000005.tar: truncated" in report
