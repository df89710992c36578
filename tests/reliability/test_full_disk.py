"""A save into a filesystem that fills up: a real tmpfs, mounted by the test (root)."""

from __future__ import annotations

import subprocess

import pytest

from causeway.checkpoint.commit import is_committed
from causeway.checkpoint.weights import load_model_weights
from causeway.config import load_config
from causeway.models import build_model, materialize
from causeway.train.failures import SaveFailed
from causeway.train.trainer import run_training

SMALL = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.d_ff=128",
    "model.vocab_size=4096", "data.seq_len=64", "data.batch_size=4", "train.log_every=1",
    "train.precision=fp32", "schedule.warmup_steps=1", "checkpoint.every=2", "checkpoint.keep=1",
]  # fmt: skip


def checkpoint_bytes(tmp_path) -> int:
    run = tmp_path / "measure"
    run_training(load_config("tiny-nd-mlm", [*SMALL, "train.steps=2"]), run)
    return sum(f.stat().st_size for f in (run / "checkpoints" / "step_2").rglob("*"))


@pytest.fixture
def small_disk(builtin_dir, tmp_path):
    """RUN/checkpoints on a tmpfs that holds one checkpoint and a half, not two."""
    size = int(checkpoint_bytes(tmp_path) * 1.5)
    mount = tmp_path / "run" / "checkpoints"
    mount.mkdir(parents=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    yield tmp_path / "run"
    subprocess.run(["umount", "-l", str(mount)], check=True)


def assert_step_2_intact(run) -> None:
    step_2 = run / "checkpoints" / "step_2"
    assert is_committed(step_2)
    assert not (run / "checkpoints" / "step_4").exists()  # the partial save is removed
    cfg = load_config("tiny-nd-mlm", SMALL)
    load_model_weights(step_2, materialize(build_model(cfg.model), "cpu"))


def test_full_disk_stops_cleanly_naming_the_newest_committed_checkpoint(small_disk):
    cfg = load_config("tiny-nd-mlm", [*SMALL, "train.steps=6"])
    with pytest.raises(SaveFailed) as failure:
        run_training(cfg, small_disk)
    message = str(failure.value)
    assert "saving step 4 into" in message and " MiB free of " in message
    assert f"the newest committed checkpoint is {small_disk / 'checkpoints' / 'step_2'}" in message
    # keep=1 deletes step_2 only once a newer checkpoint is committed, which never happened.
    assert_step_2_intact(small_disk)


def test_full_disk_with_continue_trains_on_and_the_final_save_must_succeed(small_disk, capsys):
    cfg = load_config("tiny-nd-mlm", [*SMALL, "train.steps=5", "checkpoint.on_save_error=continue"])
    with pytest.raises(SaveFailed, match="saving step 5 into"):
        run_training(cfg, small_disk)
    out = capsys.readouterr().out
    assert "saving step 4 into" in out and "training goes on" in out
    steps = [line for line in (small_disk / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 5  # steps 3 to 5 ran after the failed save of step 4
    assert_step_2_intact(small_disk)
