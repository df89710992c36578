"""The end-of-run checkpoint of a single process: weights, optimizer, config, step.

Layout: RUN_DIR/checkpoints/step_N/{model.safetensors, train_state.pt, config.yaml,
meta.json, COMMITTED}. COMMITTED is written last, after the other files are flushed and
fsynced, so a crash mid-save never leaves a directory that reads as complete. (Sharded,
resumable checkpoints under any parallel layout build on this layout.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from causeway.config import RunConfig, dump_yaml

COMMIT_MARKER = "COMMITTED"


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def save_final(
    run_dir: Path, step: int, config: RunConfig, model: nn.Module, optimizer=None
) -> Path:
    out = run_dir / "checkpoints" / f"step_{step}"
    out.mkdir(parents=True, exist_ok=True)
    (out / COMMIT_MARKER).unlink(missing_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"))
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "step": step}, out / "train_state.pt")
    (out / "config.yaml").write_text(dump_yaml(config))
    (out / "meta.json").write_text(json.dumps({"step": step, "format": 1}))
    for path in out.iterdir():
        fsync_file(path)
    marker = out / COMMIT_MARKER
    marker.write_text(f"{step}\n")
    fsync_file(marker)
    return out


def is_committed(checkpoint: Path) -> bool:
    return (checkpoint / COMMIT_MARKER).is_file()


def load_model_weights(checkpoint: Path, model: nn.Module) -> None:
    if not is_committed(checkpoint):
        raise RuntimeError(f"{checkpoint} has no {COMMIT_MARKER} marker: it is partial")
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")))


def load_train_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "train_state.pt", weights_only=True)
