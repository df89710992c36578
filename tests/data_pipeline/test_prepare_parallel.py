"""Preparation at scale: parallel processes, shard sizes, dtypes, resuming an interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from causeway.data_pipeline.prepare.prepare import parse_size, prepare_files
from causeway.data_pipeline.prepare.progress import PROGRESS_DIR
from causeway.data_pipeline.shards.index import read_index
from causeway.data_pipeline.shards.writer import SplitWriter, token_dtype
from causeway.data_pipeline.stream import DataStream

from .reference.reader import decode_ids, iter_samples


@pytest.fixture(scope="module")
def inputs(builtin_corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The builtin corpus in three jsonl files and a .txt file."""
    root = tmp_path_factory.mktemp("inputs")
    paths = []
    for k in range(3):
        path = root / f"part{k}.jsonl"
        rows = [{"text": t} for t in builtin_corpus[k * 300 : (k + 1) * 300]]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        paths.append(path)
    (root / "book.txt").write_text("\n\n".join(builtin_corpus[900:1000]), encoding="utf-8")
    return paths + [root / "book.txt"]


def prepare(inputs: list[Path], tokenizer: Path, out: Path, **kwargs) -> Path:
    args = {"val_fraction": 0.1, "shard_bytes": 64 * 1024} | kwargs
    return prepare_files(inputs, tokenizer, out, **args)


def files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}


def test_parallel_preparation_equals_one_process(
    inputs: list[Path], small_builtin: Path, tmp_path: Path
) -> None:
    tokenizer = small_builtin / "tokenizer.json"
    one = prepare(inputs, tokenizer, tmp_path / "one", num_proc=1)
    two = prepare(inputs, tokenizer, tmp_path / "two", num_proc=2)
    assert files(one) == files(two)
    index = read_index(two)
    keys = sorted(int(s["__key__"]) for split in ("train", "val")
                  for s in iter_samples(two, split, seed=0))  # fmt: skip
    assert keys == list(range(len(keys)))  # one global numbering across files
    assert 0.05 < index["splits"]["val"]["documents"] / len(keys) < 0.15


def test_shards_fill_up_to_the_target_size(
    inputs: list[Path], small_builtin: Path, tmp_path: Path
) -> None:
    out = prepare(inputs, small_builtin / "tokenizer.json", tmp_path / "o", num_proc=1)
    shards = read_index(out)["splits"]["train"]["shards"]
    assert len(shards) > 8
    by_file: dict[str, list[dict]] = {}
    for shard in shards:
        assert (out / shard["name"]).stat().st_size == shard["bytes"] <= 64 * 1024
        by_file.setdefault(shard["name"].split("-")[1], []).append(shard)
    for group in by_file.values():  # every shard but a file's last is nearly full
        assert all(s["bytes"] > 64 * 1024 - 12 * 1024 for s in group[:-1])
    assert parse_size("256MiB") == 256 * 2**20 and parse_size("1.5k") == 1536
    with pytest.raises(ValueError, match="size"):
        parse_size("lots")


def test_rerun_after_an_interruption_keeps_finished_shards(
    inputs: list[Path], small_builtin: Path, tmp_path: Path
) -> None:
    tokenizer = small_builtin / "tokenizer.json"
    reference = files(prepare(inputs, tokenizer, tmp_path / "ref", num_proc=1))
    out = prepare(inputs, tokenizer, tmp_path / "out", num_proc=1)
    # Make it look interrupted: unit 1 had finished only its first two train shards.
    progress = out / PROGRESS_DIR / "unit-00001.json"
    record = json.loads(progress.read_text())
    lost = record["splits"]["train"][2:]
    record["splits"]["train"] = record["splits"]["train"][:2]
    record["done"] = False
    progress.write_text(json.dumps(record))
    for shard in lost:
        (out / shard["name"]).unlink()
    (out / "index.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    prepare(inputs, tokenizer, out, num_proc=2)
    assert files(out) == reference
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept


@pytest.mark.slow
def test_killed_preparation_resumes_to_the_same_bytes(
    inputs: list[Path], small_builtin: Path, tmp_path: Path
) -> None:
    """A real interruption: SIGKILL while shards are being written, then run again."""
    tokenizer = small_builtin / "tokenizer.json"
    reference = files(prepare(inputs, tokenizer, tmp_path / "ref", shard_bytes=32 * 1024))
    out = tmp_path / "out"
    code = (
        "import sys; from causeway.data_pipeline.prepare.prepare import prepare_files; "
        f"prepare_files({[str(p) for p in inputs]!r}, {str(tokenizer)!r}, {str(out)!r}, "
        "val_fraction=0.1, shard_bytes=32 * 1024, num_proc=1)"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not list((out / PROGRESS_DIR).glob("unit-0000[12].json")):
        assert process.poll() is None and time.monotonic() < deadline, "prepare ended too soon"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "index.json").exists()
    recorded = [json.loads(p.read_text()) for p in (out / PROGRESS_DIR).glob("unit-*.json")]
    names = [s["name"] for r in recorded for split in r["splits"].values() for s in split]
    assert names
    finished = {n: (out / n).stat().st_mtime_ns for n in names}
    prepare(inputs, tokenizer, out, shard_bytes=32 * 1024)
    assert files(out) == reference
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == finished


def test_changed_settings_start_over(
    inputs: list[Path], small_builtin: Path, tmp_path: Path
) -> None:
    tokenizer = small_builtin / "tokenizer.json"
    out = prepare(inputs, tokenizer, tmp_path / "o", num_proc=1)
    prepare(inputs[:1], tokenizer, out, num_proc=1, shard_bytes=1 << 20)
    names = {s["name"] for split in read_index(out)["splits"].values() for s in split["shards"]}
    assert {p.name for p in out.glob("*.tar")} == names  # the old shards are gone


def test_large_vocabularies_are_stored_as_uint32(uneven: Path, tmp_path: Path) -> None:
    assert token_dtype(65536) == np.dtype("<u2") and token_dtype(65537) == np.dtype("<u4")
    out = tmp_path / "wide"
    out.mkdir()
    index = json.loads((uneven / "index.json").read_text())
    (out / "tokenizer.json").write_bytes((uneven / "tokenizer.json").read_bytes())
    writer = SplitWriter(out, "train", np.dtype("<u4"))
    for number, sample in enumerate(iter_samples(uneven, "train", seed=0)):
        writer.write(number, tokens=decode_ids(sample, "tokens"))
    index["dtype"] = "uint32"
    index["splits"] = {"train": writer.close()}
    (out / "index.json").write_text(json.dumps(index))
    assert {p.name.rsplit(".", 1)[0] for p in out.glob("*.tar")} == {"train-000000"}
    args = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 32,
            "batch_size": 2, "readers": 1, "loop": False}  # fmt: skip

    def scored_tokens(data: Path) -> np.ndarray:  # the same documents, in another shard layout
        batches = list(DataStream(data, **args))
        counts = [np.bincount(b["targets"][b["loss_mask"]].numpy(), minlength=512) for b in batches]
        return np.sum(counts, axis=0)

    assert (scored_tokens(out) == scored_tokens(uneven)).all()
