"""Finding and reading a Megatron-LM checkpoint: which iteration, which layout, its shards.

A Megatron-LM save directory holds `latest_checkpointed_iteration.txt` (a number, or
`release`) and one directory per iteration, `iter_0000500/` (or `release/`). Inside, one
of two layouts:
- legacy: `mp_rank_TT/model_optim_rng.pt` per tensor-parallel rank, `mp_rank_TT_PPP/`
  with pipeline parallelism; each a pickle of {"args", "iteration", "model", ...}, the
  model's tensors as that rank holds them;
- `torch_dist`: a `torch.distributed.checkpoint` (`.metadata`, `__R_I.distcp`) of the
  global, unsharded tensors, `metadata.json` naming the backend and `common.pt` with
  the rest ({"args", "iteration", ...}).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from causeway.convert.foreign.pickles import (
    Allowed,
    load_dcp_metadata,
    load_pickle,
    stand_in,
)

TRACKER = "latest_checkpointed_iteration.txt"
LEGACY_FILE = "model_optim_rng.pt"
SHARD_DIR = re.compile(r"mp_rank_(\d{2})(?:_(\d{3}))?(_\d{3})?$")
# Model tensors of megatron-core's GPTModel; the rest of a torch_dist save is optimizer
# and RNG state.
MODEL_PREFIXES = ("embedding.", "decoder.", "output_layer.")


def megatron_allowed() -> Allowed:
    """What a Megatron-LM pickle needs besides tensors: its argparse Namespace, NumPy's
    RNG state, and enum members of megatron-core's args (read as stand-ins, so that
    megatron-core need not be installed)."""
    import argparse

    import numpy as np

    numpy_globals = [np.dtype, np.ndarray, type(np.dtype(np.uint32))]
    reconstruct = getattr(np, "_core", np).multiarray._reconstruct
    enums = ["megatron.core.transformer.enums.AttnBackend",
             "megatron.core.transformer.enums.AttnMaskType",
             "megatron.core.enums.ModelType",
             "megatron.core.transformer.enums.ModelType"]  # fmt: skip
    return [
        argparse.Namespace,
        *numpy_globals,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        *[(stand_in(name), name) for name in enums],
    ]


@dataclass
class MegatronFiles:
    directory: Path  # the iteration's directory
    layout: Literal["legacy", "torch_dist"]
    # legacy: each file's model state by (tensor rank, pipeline rank); a virtual pipeline
    # (interleaved schedule) keeps model0, model1, ... in each file: the list's entries.
    shards: dict[tuple[int, int], list[dict[str, torch.Tensor]]] = field(default_factory=dict)
    # torch_dist: the global tensors by name.
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    args: Any = None  # the saved argparse Namespace (or None)

    @property
    def tensor_parallel(self) -> int:
        return 1 + max(t for t, _ in self.shards) if self.shards else 1

    @property
    def pipeline_parallel(self) -> int:
        return 1 + max(p for _, p in self.shards) if self.shards else 1


def iteration_directory(root: Path, iteration: int | None) -> Path:
    """The directory of `iteration`, else of the one the tracker file names; `root` may
    also be an iteration directory itself."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory (a Megatron-LM checkpoint directory)")
    if iteration is None and is_iteration(root):
        return root
    saved = sorted(p.name for p in root.glob("iter_*")) + (["release"] * is_iteration(
        root / "release"))  # fmt: skip
    if iteration is not None:
        chosen = root / f"iter_{iteration:07d}"
    elif (root / TRACKER).is_file():
        text = (root / TRACKER).read_text().strip()
        if text != "release" and not text.isdigit():
            raise ValueError(f"{root / TRACKER}: {text!r} is neither an iteration nor release")
        chosen = root / ("release" if text == "release" else f"iter_{int(text):07d}")
    else:
        raise ValueError(
            f"{root}: no {TRACKER}; pass --iteration N (saved: {', '.join(saved) or 'none'})"
        )
    if not is_iteration(chosen):
        raise ValueError(f"{chosen} is not a saved iteration (saved: {', '.join(saved) or 'none'})")
    return chosen


def is_iteration(path: Path) -> bool:
    return path.is_dir() and ((path / "metadata.json").is_file() or any(shard_dirs(path)))


def shard_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and SHARD_DIR.match(p.name))


def read_megatron(root: Path, iteration: int | None = None) -> MegatronFiles:
    directory = iteration_directory(root, iteration)
    if (directory / "metadata.json").is_file():
        return read_torch_dist(directory)
    return read_legacy(directory)


def read_legacy(directory: Path) -> MegatronFiles:
    files, allowed = MegatronFiles(directory, "legacy"), megatron_allowed()
    for sub in shard_dirs(directory):
        tp, pp, expert = SHARD_DIR.match(sub.name).groups()
        if expert:
            raise ValueError(f"{sub}: expert-parallel shards (a mixture of experts) are not "
                             "importable: causeway models are dense")  # fmt: skip
        path = sub / LEGACY_FILE
        if not path.is_file():
            raise ValueError(f"{sub} has no {LEGACY_FILE}")
        saved = load_pickle(path, allowed)
        files.shards[(int(tp), int(pp or 0))] = model_chunks(saved, path)
        files.args = files.args if files.args is not None else saved.get("args")
    grid = {(t, p) for t in range(files.tensor_parallel) for p in range(files.pipeline_parallel)}
    if grid - set(files.shards):
        absent = sorted(grid - set(files.shards))
        raise ValueError(f"{directory}: shards missing for (tensor, pipeline) ranks {absent}")
    return files


def model_chunks(saved: dict, path: Path) -> list[dict[str, torch.Tensor]]:
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a Megatron-LM checkpoint (a pickled dict)")
    if "model" in saved:
        chunks = [saved["model"]]
    else:
        chunks = [saved[k] for k in sorted(saved, key=str) if re.fullmatch(r"model\d+", str(k))]
    if not chunks:
        raise ValueError(f"{path}: holds no model state (keys {sorted(map(str, saved))[:8]})")
    return [flat_tensors(c) for c in chunks]


def flat_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Megatron's pre-core models save nested dicts ({"language_model": {"encoder":
    {...}}}): dotted names, as megatron-core's flat state dict has them."""
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(flat_tensors(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
    return out


def read_torch_dist(directory: Path) -> MegatronFiles:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint import load as dcp_load
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from causeway.checkpoint.ranks import quiet_single_process

    backend = json.loads((directory / "metadata.json").read_text()).get("sharded_backend")
    if backend != "torch_dist":
        raise ValueError(f"{directory}: sharded backend {backend!r} (only torch_dist)")

    metadata = load_dcp_metadata(directory / ".metadata")  # the restricted unpickler

    class Reader(FileSystemReader):  # DCP reads the metadata read above, not the file
        def read_metadata(self):
            if getattr(metadata, "storage_meta", None) is not None:
                metadata.storage_meta.load_id = self.load_id
            return metadata

    tensors = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if isinstance(meta, TensorStorageMetadata) and key.startswith(MODEL_PREFIXES)
    }
    if not tensors:
        raise ValueError(f"{directory}: no model tensors (names starting {MODEL_PREFIXES})")
    with quiet_single_process():
        dcp_load(tensors, storage_reader=Reader(str(directory)))
    common = directory / "common.pt"
    saved = load_pickle(common, megatron_allowed()) if common.is_file() else {}
    return MegatronFiles(directory, "torch_dist", tensors=tensors, args=saved.get("args"))
