"""train.profile_steps writes a torch profiler trace of exactly those steps."""

import json

from causeway.config import load_config
from causeway.train.trainer import run_training


def optimizer_steps(trace: dict) -> int:
    """The profiler marks each optimizer.step() with a record_function of its own."""
    return sum(
        1 for event in trace["traceEvents"]
        if event.get("ph") == "X" and event.get("name", "").startswith("Optimizer.step#")
    )  # fmt: skip


def test_profile_steps_trace_those_steps_only(builtin_dir, tmp_path, capsys):
    sets = ["train.steps=5", "train.log_every=5", "train.profile_steps=[2,3]"]
    run_training(load_config("tiny-cd-flm", sets), tmp_path / "run")
    path = tmp_path / "run" / "profile" / "trace_rank0.json"
    trace = json.loads(path.read_text())
    assert optimizer_steps(trace) == 2  # steps 2 and 3 of 5
    names = {event.get("name") for event in trace["traceEvents"]}
    assert "aten::mm" in names or "aten::addmm" in names or "aten::matmul" in names
    assert f"profile of steps 2-3 in {tmp_path / 'run' / 'profile'}" in capsys.readouterr().out


def test_a_run_that_ends_inside_the_window_still_writes_its_trace(builtin_dir, tmp_path):
    sets = ["train.steps=3", "train.log_every=3", "train.profile_steps=[2,9]"]
    run_training(load_config("tiny-cd-flm", sets), tmp_path / "run")
    trace = json.loads((tmp_path / "run" / "profile" / "trace_rank0.json").read_text())
    assert optimizer_steps(trace) == 2
