"""The `causeway` command as a user runs it: real subprocesses, real files."""

import json
import os
import subprocess
import sys

import yaml

from causeway.cli import main


def causeway(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "causeway", *args],
        capture_output=True, text=True, cwd=cwd, env=os.environ.copy(), timeout=600,
    )  # fmt: skip


def test_config_show_prints_the_resolved_config():
    result = causeway("config", "show", "tiny-ed-mlm", "--set", "train.steps=3")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["train"]["steps"] == 3
    assert shown["model"]["visibility"] == "prefix"
    assert shown["data"]["targets_length"] is not None


def test_config_errors_are_one_line_exit_2_and_write_nothing(tmp_path):
    run_dir = tmp_path / "run"
    cases = [
        (["--set", "model.d_modle=3"], "did you mean 'model.d_model'"),
        (["--set", "train.steps=many"], "train.steps expects int"),
        (["--set", "model.visibility=bidirectional"], "refused"),
    ]
    for extra, message in cases:
        result = causeway("train", "tiny-cd-flm", "--run-dir", str(run_dir), *extra)
        assert result.returncode == 2
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not run_dir.exists()


def test_train_without_a_recipe_runs_quickstart(builtin_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), "--set", "train.steps=2"]) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "quickstart"
    assert "step 2/2" in capsys.readouterr().out


def test_train_subprocess_logs_plain_lines_off_a_terminal(builtin_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = causeway(
        "train", "tiny-cd-plm", "--run-dir", str(run_dir),
        "--set", "train.steps=4", "--set", "train.log_every=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"]
    assert "loss" in lines[0] and "tokens_per_s" in lines[0]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "tokens_per_s"} <= records[0].keys()


def test_data_prepare_files_then_train_on_them(builtin_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    words = ["river", "stone", "bridge", "tide", "harbour", "lantern"]
    texts = [f"The {words[i % 6]} number {i} stands. " * 40 for i in range(60)]
    lines = [json.dumps({"text": text}) for text in texts]
    docs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prepared"
    result = causeway(
        "data", "prepare", "--input", str(docs),
        "--tokenizer", str(builtin_dir / "tokenizer.json"),
        "--out", str(out), "--val-fraction", "0.2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["splits"]["train"]["documents"] + index["splits"]["val"]["documents"] == 60
    run = causeway(
        "train", "tiny-cd-flm", "--run-dir", str(tmp_path / "run"),
        "--set", "data.source=path", "--set", f"data.path={out}", "--set", "train.steps=2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


def test_data_prepare_names_a_missing_field(builtin_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"body": "no text field here"}) + "\n")
    result = causeway(
        "data", "prepare", "--input", str(docs),
        "--tokenizer", str(builtin_dir / "tokenizer.json"), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "docs.jsonl" in result.stderr and "text" in result.stderr
