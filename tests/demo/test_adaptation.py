"""The adaptation demo's smallest configuration, end to end: every stage, the report and
its plots, and a second run that redoes nothing."""

from __future__ import annotations

import json

import pytest

from causeway.checkpoint.discovery import newest_committed
from causeway.config import ConfigError
from causeway.demo.adaptation import SMOKE, Pipeline, run_demo

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_pipeline_runs_reports_and_resumes(builtin_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, SMOKE)
    first = capsys.readouterr().out
    runs = Pipeline(out, SMOKE).runs()
    assert [r.stage for r in runs] == ["pretrain"] * 2 + ["adapt"] * 2 + ["mtf"] * 4
    assert "[16/16] evaluate CD:FLM -> ND:MLM + MTF" in first
    table = [line for line in report.read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(runs)  # header + one row per checkpoint
    assert table[0].split(" | ")[-1] == "average |"
    for name in ("loss_curves.png", "zero_shot.png"):
        assert (out / name).read_bytes().startswith(PNG)
    # The adapted models start from the converted weights of the other pretraining run.
    converted = newest_committed(out / "runs" / "nd-mlm-to-cd-flm-init")
    meta = json.loads((converted / "meta.json").read_text())
    assert meta["provenance"][-1]["conversion"] == "arch prefix/span_corruption -> causal/full_lm"
    # Equal token budgets for the two pretraining runs; adaptation adds to it.
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table[1:]}
    assert rows["CD:FLM"][2] == rows["ND:MLM"][2] == f"{4 * 8 * 128:,}"

    # Interrupted after everything: nothing is redone. One stage lost: only it is.
    (out / "stages" / "eval ND:MLM + MTF.json").unlink()
    run_demo(out, SMOKE)
    again = capsys.readouterr().out
    assert again.count("done before, kept") == 16
    assert "eval ND:MLM + MTF: " in again and (out / "stages" / "eval ND:MLM + MTF.json").is_file()


def test_a_directory_of_other_settings_or_other_files_is_refused(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no demo"):
        run_demo(tmp_path / "other", SMOKE)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "settings.json").write_text(json.dumps({"pretrain_steps": 1}))
    with pytest.raises(ConfigError, match="other settings"):
        run_demo(tmp_path / "demo", SMOKE)
