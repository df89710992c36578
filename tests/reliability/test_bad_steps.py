"""Non-finite steps and loss spikes: skipped on every rank, counted, state untouched."""

from __future__ import annotations

import pytest
import torch

from causeway.checkpoint.discovery import newest_committed
from causeway.config import load_config
from causeway.config.schema import TrainConfig
from causeway.train.failures import TooManyBadSteps
from causeway.train.faults import ENV, Faults, parse_faults
from causeway.train.guard import StepGuard
from causeway.train.stop import StopSignals
from causeway.train.trainer import Trainer, run_training

BASE = ["train.log_every=1", "train.precision=fp32", "schedule.warmup_steps=1"]


def trainer(tmp_path, *sets) -> Trainer:
    cfg = load_config("tiny-nd-mlm", [*BASE, *sets])
    t = Trainer(cfg, tmp_path / "run")
    t.setup()
    return t


def snapshot(t: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.clone() for k, v in t.pm.parts[0].state_dict().items()}
    for i, values in enumerate(t.optimizer.state.values()):
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                state[f"optimizer.{i}.{key}"] = value.clone()
    return state


@pytest.mark.parametrize("fault", ["nan_loss", "inf_grad"])
def test_bad_step_is_skipped_with_weights_and_optimizer_state_bit_for_bit(
    builtin_dir, tmp_path, monkeypatch, fault
):
    monkeypatch.setenv(ENV, f"{fault}@3")
    t = trainer(tmp_path, "train.steps=4")
    for step in (1, 2):
        assert t.step(step, next(t.data.train)).applied
    before = snapshot(t)
    result = t.step(3, next(t.data.train))
    assert not result.applied and t.guard.skipped == 1
    assert t.guard.verdict.reason == "non-finite loss or gradient norm"
    after = snapshot(t)
    assert before.keys() == after.keys() and len(before) > 10
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert all(p.grad is None for p in t.pm.parameters())
    assert t.step(4, next(t.data.train)).applied  # the next good step applies again
    assert not all(torch.equal(v, snapshot(t)[k]) for k, v in after.items())


def test_skipped_steps_are_logged_and_counted(builtin_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "inf_grad@2,nan_loss@4")
    records = run_training(load_config("tiny-nd-mlm", [*BASE, "train.steps=5"]), tmp_path)
    out = capsys.readouterr().out
    assert "TEST FAULTS ACTIVE" in out
    assert "step 2 skipped: non-finite loss or gradient norm (1 skipped)" in out
    assert "step 4 skipped: non-finite loss or gradient norm (2 skipped)" in out
    assert [r["skipped_steps"] for r in records] == [0, 1, 1, 2, 2]


def test_k_bad_steps_in_a_row_stop_naming_them_and_the_last_good_checkpoint(
    builtin_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv(ENV, "nan_loss@3,nan_loss@4,inf_grad@5")
    cfg = load_config("tiny-nd-mlm", [*BASE, "train.steps=8", "checkpoint.every=2",
                                      "train.max_bad_steps=3"])  # fmt: skip
    with pytest.raises(TooManyBadSteps) as failure:
        run_training(cfg, tmp_path)
    message = str(failure.value)
    assert "3 bad steps in a row (train.max_bad_steps=3): 3 (non-finite" in message
    assert "4 (non-finite" in message and "5 (non-finite" in message
    newest = newest_committed(tmp_path)
    assert newest.name == "step_4" and f"the newest committed checkpoint is {newest}" in message
    # The last good checkpoint is intact: a restart resumes from it and trains on.
    monkeypatch.delenv(ENV)
    again = load_config("tiny-nd-mlm", [*BASE, "train.steps=6", "checkpoint.resume=auto"])
    resumed = run_training(again, tmp_path)
    assert [r["step"] for r in resumed] == [5, 6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in resumed)


def guard(**settings) -> StepGuard:
    cfg = TrainConfig(**settings)
    return StepGuard(cfg, StopSignals([]), torch.device("cpu"), Faults([], 0))


def judge(g: StepGuard, step: int, loss: float, norm: float = 1.0):
    return g.judge(step, torch.tensor(loss), torch.tensor(norm, dtype=torch.float64))


def test_loss_spike_guard_skips_outliers_once_its_window_is_full():
    g = guard(spike_window=4, spike_z=3.0, max_bad_steps=2)
    for step, loss in enumerate([2.0, 2.1, 1.9, 2.0], start=1):
        assert judge(g, step, loss).apply
    verdict = judge(g, 5, 9.0)
    assert not verdict.apply and "loss spike 9, z-score" in verdict.reason
    assert "train.spike_z=3.0" in verdict.reason
    assert judge(g, 6, 2.05).apply  # a normal loss applies, and resets the run of bad ones
    assert not judge(g, 7, 9.0).apply
    with pytest.raises(TooManyBadSteps, match="7 .*loss spike.*8 .*non-finite"):
        judge(g, 8, float("nan"))


def test_spike_guard_is_off_by_default_and_a_fall_is_never_a_spike():
    off = guard()
    for step, loss in enumerate([2.0, 2.0, 2.1, 1.9, 50.0], start=1):
        assert judge(off, step, loss).apply
    on = guard(spike_window=3, spike_z=1.0)
    for step, loss in enumerate([2.0, 2.1, 1.9, 0.1], start=1):
        assert judge(on, step, loss).apply


def test_no_guard_in_one_process_reads_nothing_from_the_device():
    assert not guard(max_bad_steps=0).reads
    assert guard().reads
    nan = judge(guard(max_bad_steps=0), 1, float("nan"))
    assert nan.apply  # with the check off, a non-finite step is applied as before


@pytest.mark.parametrize(
    "text", ["nan_loss", "nan_loss@x", "boom@3", "inf_grad@3:r", "kill_in_save@"]
)
def test_fault_hook_refuses_what_it_does_not_know(text):
    with pytest.raises(ValueError, match=ENV):
        parse_faults(text)


def test_the_guard_resumes_with_the_checkpoint(builtin_dir, tmp_path, monkeypatch):
    """The skipped count and the spike window are saved: a restart judges spikes against
    the losses before the save and counts on."""
    monkeypatch.setenv(ENV, "nan_loss@2")
    first = trainer(tmp_path, "train.steps=6", "train.spike_window=3", "train.spike_z=50")
    first.fit()
    assert first.guard.skipped == 1 and len(first.guard.recent) == 3
    monkeypatch.delenv(ENV)
    again = trainer(tmp_path, "train.steps=8", "train.spike_window=3", "train.spike_z=50",
                    "checkpoint.resume=auto")  # fmt: skip
    assert again.start_step == 6
    assert again.guard.skipped == 1
    assert list(again.guard.recent) == list(first.guard.recent)
    records = again.fit()
    assert [r["skipped_steps"] for r in records] == [1, 1]


def test_a_checkpoint_without_guard_state_still_resumes(builtin_dir, tmp_path):
    """Checkpoints written before the guard was saved load; the guard starts afresh."""
    first = trainer(tmp_path, "train.steps=2")
    first.checkpointer.guard = None  # writes no guard state, as older checkpoints
    first.fit()
    again = trainer(tmp_path, "train.steps=3", "train.spike_window=2", "checkpoint.resume=auto")
    assert again.start_step == 2 and again.guard.skipped == 0 and not again.guard.recent
