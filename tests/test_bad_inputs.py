"""Bad inputs, one table: each wrong input gives one line on stderr that names the problem
and where it came from, exit status 2 for a usage error, no traceback, and nothing written.

The rows are in tests/bad_input_cases.py. Everything under `{tmp}` and the shared run
directory must be unchanged afterwards and `{out}` must not exist.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from causeway.cli import main
from tests.bad_input_cases import CASES, SMALL, Bad


@pytest.fixture(scope="module")
def shared(builtin_dir, tmp_path_factory) -> dict[str, Path]:
    """A committed decoder checkpoint (run), an encoder-decoder made from it (ed)."""
    from causeway.config import load_config
    from causeway.convert.arch import to_encoder_decoder
    from causeway.train.trainer import run_training

    root = tmp_path_factory.mktemp("shared")
    cfg = load_config("tiny-cd-flm", [*SMALL, "train.steps=1", "train.progress=lines"])
    run_training(cfg, root / "run")
    to_encoder_decoder(root / "run", root / "ed")
    return {"run": root / "run", "ed": root / "ed", "builtin": builtin_dir}


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and directory under `roots` with its size and modification time."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            stat = path.stat()
            found[str(path)] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
    return found


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse
        return exit.code


def test_the_table_covers_every_kind_of_bad_input():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input(case: Bad, shared, tmp_path, capsys, monkeypatch):
    if case.needs and importlib.util.find_spec(case.needs) is None:
        pytest.skip(f"needs {case.needs}")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.chdir(tmp_path)
    where = {**{k: str(v) for k, v in shared.items()}, "tmp": str(tmp_path),
             "out": str(tmp_path / "out")}  # fmt: skip
    if case.setup:
        case.setup(tmp_path, where)
    before = snapshot(tmp_path, shared["run"])
    capsys.readouterr()
    code = run_cli(shlex.split(case.args.format(**where)))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert case.says.format(**where) in lines[0]
    assert lines[0].startswith("causeway")
    assert code == case.code, err
    assert not (tmp_path / "out").exists()
    assert snapshot(tmp_path, shared["run"]) == before, "something was written"


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize(
    ("agent", "code"),
    [("causeway.launcher.torchrun", 2), ("torch.distributed.run", 1)],
    ids=["causeway-launch-local", "plain-torchrun"],
)
def test_usage_error_under_torchrun_is_printed_once(agent, code, tmp_path):
    """What `causeway launch local` runs (its torchrun agent passes the first failed rank's
    status on), and torchrun as users run it (status 1): the line comes from rank 0 only."""
    from causeway.launcher.common import free_port
    from causeway.launcher.local import torchrun_args

    args = torchrun_args("1", 2, f"127.0.0.1:{free_port()}", "bad", str(tmp_path / "logs"))
    args[args.index("causeway.launcher.torchrun")] = agent
    command = [sys.executable, *args, "-m", "causeway", "train", "tiny-cd-flm", "--run-dir",
               str(tmp_path / "run"), "--set", "optimizer.lr=abc"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert output.count("optimizer.lr expects float, got 'abc'") == 1, output
    assert result.returncode == code, output
    assert not (tmp_path / "run").exists()
    if code == 2:
        assert "Traceback" not in output, output
