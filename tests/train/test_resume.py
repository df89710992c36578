"""Resumable checkpoints in one process: commit rule, keep-last-K, async, resume: auto."""

from __future__ import annotations

import logging

import pytest

from causeway.config import load_config
from causeway.train.trainer import run_training

BASE = ["train.log_every=1", "train.precision=fp32", "schedule.warmup_steps=1"]


def train(tmp, *sets):
    return run_training(load_config("tiny-nd-mlm", [*BASE, *sets]), tmp)


def steps_on_disk(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_interrupted_run_resumes_with_the_losses_of_an_uninterrupted_one(builtin_dir, tmp_path):
    whole = train(tmp_path / "whole", "train.steps=4")
    train(tmp_path / "cut", "train.steps=2", "checkpoint.every=2")
    resumed = train(tmp_path / "cut", "train.steps=4", "checkpoint.resume=auto")
    assert [r["step"] for r in resumed] == [3, 4]
    for want, got in zip(whole[2:], resumed, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-6)
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-9)


def test_keep_last_k_and_commit_markers(builtin_dir, tmp_path):
    train(tmp_path, "train.steps=4", "checkpoint.every=1", "checkpoint.keep=2")
    assert steps_on_disk(tmp_path) == ["step_3", "step_4"]
    assert all((tmp_path / "checkpoints" / s / "COMMITTED").is_file() for s in ["step_3", "step_4"])


def test_async_saves_are_committed_and_resumable(builtin_dir, tmp_path):
    whole = train(tmp_path / "whole", "train.steps=3")
    train(tmp_path / "a", "train.steps=2", "checkpoint.every=1", "checkpoint.async_save=true")
    assert (tmp_path / "a" / "checkpoints" / "step_2" / "COMMITTED").is_file()
    resumed = train(tmp_path / "a", "train.steps=3", "checkpoint.resume=auto")
    assert resumed[0]["loss"] == pytest.approx(whole[2]["loss"], rel=1e-6)


def test_resume_auto_skips_partial_checkpoints_and_names_them(builtin_dir, tmp_path, caplog):
    train(tmp_path, "train.steps=2", "checkpoint.every=1")
    partial = tmp_path / "checkpoints" / "step_7"
    partial.mkdir()
    (partial / ".metadata").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="causeway.checkpoint"):
        records = train(tmp_path, "train.steps=3", "checkpoint.resume=auto")
    assert [r["step"] for r in records] == [3]
    assert "step_7" in caplog.text and "partial" in caplog.text


def test_explicit_partial_checkpoint_is_refused(builtin_dir, tmp_path):
    train(tmp_path, "train.steps=1")
    (tmp_path / "checkpoints" / "step_1" / "COMMITTED").unlink()
    with pytest.raises(ValueError, match="partial"):
        train(
            tmp_path / "next", "train.steps=2", f"checkpoint.resume={tmp_path}/checkpoints/step_1"
        )


def test_checkpoint_of_another_vocabulary_names_the_tensors(builtin_dir, tmp_path):
    train(tmp_path / "a", "train.steps=1")
    with pytest.raises(ValueError, match=r"embed.weight is \(4096, 128\) in the checkpoint"):
        train(
            tmp_path / "b", "train.steps=1", "model.vocab_size=4224",
            f"checkpoint.init_from={tmp_path / 'a'}",
        )  # fmt: skip
