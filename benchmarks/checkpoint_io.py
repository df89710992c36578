"""Checkpoint save, load and Hugging Face export throughput against `cp` of the same bytes.

A decoder of about 1 GB of fp32 weights is saved with causeway's checkpoint code (DCP
files, config, meta, fsync, commit marker), loaded back into a model, and exported with
`export_hf`; each is timed against copying the same files with `cp` followed by an fsync
of the copies (the same durability), in the same run. Goal: each ratio >= 0.5. Prints
one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from causeway.checkpoint.commit import fsync_tree, save_final
from causeway.checkpoint.weights import load_model_weights
from causeway.config import load_config
from causeway.convert.hf import export_hf
from causeway.models import build_model, materialize

SHAPE = [
    "model.d_model=1024", "model.n_layers=16", "model.n_heads=16", "model.d_ff=4096",
    "model.vocab_size=32768", "model.max_seq_len=1024", "data.seq_len=1024",
]  # fmt: skip


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cp_time(source: Path, target: Path) -> float:
    def copy():
        subprocess.run(["cp", "-r", str(source), str(target)], check=True)
        fsync_tree(target)

    seconds = timed(copy)
    shutil.rmtree(target)
    return seconds


def main() -> None:
    torch.set_num_threads(2)
    cfg = load_config("tiny-cd-flm", SHAPE)
    model = materialize(build_model(cfg.model), "cpu", seed=0)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        save_s = timed(lambda: save_final(tmp / "run", 1, cfg, [model]))
        checkpoint = tmp / "run" / "checkpoints" / "step_1"
        nbytes = tree_bytes(checkpoint)
        copy_s = cp_time(checkpoint, tmp / "copy")
        other = materialize(build_model(cfg.model), "cpu", seed=1)
        load_s = timed(lambda: load_model_weights(checkpoint, other))
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
        )  # noqa: E501
        export_s = timed(lambda: export_hf(checkpoint, tmp / "hf"))
        hf_bytes = tree_bytes(tmp / "hf")
        hf_copy_s = cp_time(tmp / "hf", tmp / "hf-copy")
    print(json.dumps({
        "benchmark": "checkpoint_io",
        "checkpoint_bytes": nbytes,
        "save_s": round(save_s, 3), "load_s": round(load_s, 3), "cp_s": round(copy_s, 3),
        "save_vs_cp": round(copy_s / save_s, 3),
        "load_vs_cp": round(copy_s / load_s, 3),
        "export_hf_bytes": hf_bytes, "export_hf_s": round(export_s, 3),
        "export_hf_cp_s": round(hf_copy_s, 3),
        "export_hf_vs_cp": round(hf_copy_s / export_s, 3),
        "goal": 0.5,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
