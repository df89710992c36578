"""Checkpoints written by megatron-core and by DeepSpeed themselves, once per session
(each writer is a torchrun job of gloo processes on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parallel.harness import free_port

HERE = Path(__file__).parent


def torchrun(script: str, nproc: int, *args: str, env: dict | None = None) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               str(HERE / script), *args]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


@pytest.fixture(scope="session")
def megatron_dir(tmp_path_factory) -> Path:
    """legacy/, torch_dist/ (tensor 2 x pipeline 2), layernorm/ and logits.pt."""
    pytest.importorskip("megatron.core", reason="megatron-core (the megatron extra) writes them")
    out = tmp_path_factory.mktemp("megatron")
    torchrun("write_megatron.py", 4, str(out))
    return out


@pytest.fixture(scope="session")
def deepspeed_dirs(tmp_path_factory) -> dict[int, Path]:
    """ZeRO stage -> a directory with ds/ and logits.pt: stage 2 trains a causeway
    Decoder, stage 3 a transformers LlamaForCausalLM."""
    pytest.importorskip("deepspeed", reason="DeepSpeed (the deepspeed extra) writes them")
    dirs = {}
    for stage, names in ((2, "causeway"), (3, "hf")):
        dirs[stage] = tmp_path_factory.mktemp(f"zero{stage}")
        torchrun("write_deepspeed.py", 2, str(dirs[stage]), str(stage), names,
                 env={"DS_ACCELERATOR": "cpu"})  # fmt: skip
    return dirs
