"""Corrupted checkpoints on real trained ones: the commit record's sizes at every load,
its checksums with --verify / checkpoint.verify, and `resume: auto` falling back."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from causeway.checkpoint.commit import load_state
from causeway.checkpoint.integrity import (
    CorruptCheckpoint,
    check_sizes,
    file_checksum,
    verify_checksums,
)
from causeway.checkpoint.weights import load_model_weights
from causeway.cli import main
from causeway.config import load_config
from causeway.convert.arch import convert_arch
from causeway.convert.checkpoints import load_checkpoint_model
from causeway.train.trainer import run_training

BASE = ["train.log_every=1", "train.precision=fp32", "schedule.warmup_steps=1"]
SHARD = "__0_0.distcp"


def train(run, *sets):
    return run_training(load_config("tiny-nd-mlm", [*BASE, *sets]), run)


@pytest.fixture(scope="module")
def trained(builtin_dir, tmp_path_factory):
    """A run with committed step_1..step_3 and its per-step records (never modified)."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    records = train(run, "train.steps=3", "checkpoint.every=1", "checkpoint.keep=0")
    return run, records


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run for one test to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    return copy


def step(run, n):
    return run / "checkpoints" / f"step_{n}"


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return len(data), int(len(data) * keep)


def flip_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_commit_record_lists_every_file_with_its_size_and_crc32(run):
    record = json.loads((step(run, 3) / "COMMITTED").read_text())
    assert (record["format"], record["step"], record["checksum"]) == (1, 3, "crc32")
    assert {".metadata", SHARD, "config.yaml", "meta.json"} <= set(record["files"])
    for name, entry in record["files"].items():
        assert file_checksum(step(run, 3) / name) == (entry["bytes"], entry["crc32"])
    assert not (step(run, 3) / "COMMITTED.tmp").exists()


def test_truncated_shard_is_refused_at_every_load_naming_the_file(run, capsys):
    before, after = truncate(step(run, 3) / SHARD)
    said = rf"step_3 is corrupt: {SHARD} is {after} bytes, {before} at commit"
    with pytest.raises(CorruptCheckpoint, match=said):
        load_checkpoint_model(step(run, 3))
    with pytest.raises(CorruptCheckpoint, match=said):
        load_state(step(run, 3), {})
    with pytest.raises(CorruptCheckpoint, match=said):  # a run directory: its newest
        train(run / "next", "train.steps=1", f"checkpoint.init_from={run}")
    with pytest.raises(CorruptCheckpoint, match=said):  # named explicitly: no fallback
        train(run, "train.steps=4", f"checkpoint.resume={step(run, 3)}")
    capsys.readouterr()
    assert main(["convert", "consolidate", str(run), "--out", str(run / "m.st")]) == 2
    assert f"{SHARD} is {after} bytes, {before} at commit" in capsys.readouterr().err
    assert not (run / "m.st").exists()


def test_missing_file_is_named(run):
    (step(run, 2) / ".metadata").unlink()
    with pytest.raises(CorruptCheckpoint, match=r"step_2 is corrupt: .metadata is missing"):
        check_sizes(step(run, 2))


def test_bit_flip_passes_the_sizes_but_not_the_checksums(run, capsys):
    flip_bit(step(run, 3) / SHARD)
    check_sizes(step(run, 3))  # same size: the cheap check cannot see it
    capsys.readouterr()
    assert main(["convert", "inspect", str(step(run, 3)), "--verify"]) == 2
    err = capsys.readouterr().err
    assert f"step_3 is corrupt: {SHARD} has CRC32" in err and "at commit" in err
    with pytest.raises(CorruptCheckpoint, match=f"{SHARD} has CRC32"):
        train(run, "train.steps=4", f"checkpoint.resume={step(run, 3)}", "checkpoint.verify=true")
    model = load_checkpoint_model(step(run, 2))
    with pytest.raises(CorruptCheckpoint, match=f"{SHARD} has CRC32"):
        load_model_weights(step(run, 3), model, verify=True)
    with pytest.raises(CorruptCheckpoint, match=f"{SHARD} has CRC32"):  # a copy would hide it
        convert_arch(step(run, 3), "causal", "full_lm", run / "cd", keep_optimizer=True)


def test_inspect_verify_reports_the_files_and_bytes_checked(run, capsys):
    record = json.loads((step(run, 3) / "COMMITTED").read_text())["files"]
    capsys.readouterr()
    assert main(["convert", "inspect", str(run), "--verify"]) == 0
    out, err = capsys.readouterr()
    nbytes = sum(entry["bytes"] for entry in record.values())
    assert json.loads(out)["verified"] == {"files": len(record), "bytes": nbytes}
    assert f"OK, {len(record)} files, {nbytes} bytes match the commit record" in err


def test_resume_auto_falls_back_from_a_corrupt_newest_checkpoint(trained, run, caplog):
    truncate(step(run, 3) / SHARD)
    with caplog.at_level(logging.WARNING, logger="causeway.checkpoint"):
        records = train(run, "train.steps=4", "checkpoint.resume=auto", "checkpoint.keep=1")
    assert [r["step"] for r in records] == [3, 4]  # from step_2
    assert records[0]["loss"] == pytest.approx(trained[1][2]["loss"], rel=1e-6)
    assert f"step_3 is corrupt: {SHARD}" in caplog.text
    assert "trying the previous committed checkpoint" in caplog.text
    # Set aside, so that pruning (keep=1) never counted it among the kept checkpoints.
    assert (run / "checkpoints" / "step_3.corrupt" / SHARD).is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_3.corrupt", "step_4"]
    check_sizes(step(run, 4))


def test_resume_auto_with_verify_passes_over_a_bit_flip(trained, run, caplog):
    flip_bit(step(run, 3) / SHARD)
    flip_bit(step(run, 2) / SHARD)
    with caplog.at_level(logging.WARNING, logger="causeway.checkpoint"):
        records = train(run, "train.steps=3", "checkpoint.resume=auto", "checkpoint.verify=true")
    assert [r["step"] for r in records] == [2, 3]  # from step_1
    assert records[0]["loss"] == pytest.approx(trained[1][1]["loss"], rel=1e-6)
    assert "step_3 is corrupt" in caplog.text and "step_2 is corrupt" in caplog.text


def test_resume_auto_refuses_to_start_afresh_when_every_checkpoint_is_corrupt(run):
    for n in (1, 2, 3):
        truncate(step(run, n) / SHARD)
    with pytest.raises(CorruptCheckpoint, match="every committed checkpoint") as err:
        train(run, "train.steps=4", "checkpoint.resume=auto")
    assert all(f"step_{n} is corrupt" in str(err.value) for n in (1, 2, 3))
    assert not (run / "checkpoints" / "step_4").exists()


def test_an_old_marker_without_a_file_table_still_loads(run, capsys):
    for n in (1, 2, 3):
        (step(run, n) / "COMMITTED").write_text(f"{n}\n")
    truncate(step(run, 1) / SHARD)  # unchecked without a record, and never reached
    load_checkpoint_model(step(run, 3))
    capsys.readouterr()
    assert main(["convert", "inspect", str(step(run, 3)), "--verify"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["verified"] is None and "no commit record to verify" in err
    records = train(run, "train.steps=4", "checkpoint.resume=auto", "checkpoint.verify=true")
    assert [r["step"] for r in records] == [4]
    assert json.loads((step(run, 4) / "COMMITTED").read_text())["step"] == 4


def test_an_unreadable_record_is_corrupt(run):
    (step(run, 3) / "COMMITTED").write_text('{"format": 1, "files": {')
    with pytest.raises(CorruptCheckpoint, match="COMMITTED is not a commit record"):
        load_checkpoint_model(step(run, 3))


def test_ranks_split_the_checksums_and_agree_on_the_fallback(run):
    from tests.parallel.harness import run_distributed

    flip_bit(step(run, 3) / SHARD)
    verify_checksums(step(run, 3), rank=0, world=2)  # rank 0's share misses it
    results = run_distributed("tests.checkpoint.dist_workers:choose_with_verify", 2, str(run))
    assert results == [{"chosen": "step_2", "corrupt": ["step_3"]}] * 2
