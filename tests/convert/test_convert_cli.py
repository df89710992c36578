import json

from causeway.cli import main
from causeway.config import load_config
from causeway.train.trainer import run_training


def test_convert_commands_from_the_cli(builtin_dir, tmp_path, capsys):
    run_training(load_config("tiny-nd-plm", ["train.steps=1"]), tmp_path / "run")
    capsys.readouterr()  # the training log
    assert main(["convert", "inspect", str(tmp_path / "run")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 1 and info["committed"]
    out = tmp_path / "cd"
    args = ["convert", "arch", str(tmp_path / "run"), "--visibility", "causal"]
    assert main([*args, "--objective", "full_lm", "--out", str(out)]) == 0
    assert main([*args, "--objective", "masked_lm", "--out", str(tmp_path / "bad")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(["convert", "consolidate", str(out), "--out", str(tmp_path / "m.st")]) == 0
    assert (tmp_path / "m.st").stat().st_size > 0
