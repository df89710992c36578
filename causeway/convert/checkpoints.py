"""Reading, describing and writing checkpoints for the convert commands (finding them is
`causeway.checkpoint.discovery`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from causeway.checkpoint.commit import is_committed
from causeway.checkpoint.discovery import resolve_checkpoint
from causeway.checkpoint.integrity import verify_checksums
from causeway.checkpoint.training_state import tensor_table
from causeway.config import RunConfig, load_config


def readable_checkpoint(path: str | Path, allow_partial: bool = False) -> Path:
    """`resolve_checkpoint`, and its tensor table readable: a damaged .metadata is one line
    naming the checkpoint, not the unpickler's complaint."""
    if not Path(path).exists():
        raise ValueError(f"{path} does not exist")
    source = resolve_checkpoint(path, allow_partial)
    try:
        tensor_table(source)
    except Exception as err:  # whatever the reader of a damaged file raises
        why = " ".join(f"{type(err).__name__}: {err}".split())
        raise ValueError(f"checkpoint {source}: its .metadata cannot be read ({why})") from None
    return source


def checkpoint_config(checkpoint: Path) -> RunConfig:
    return load_config(str(checkpoint / "config.yaml"))


def checkpoint_meta(checkpoint: Path) -> dict:
    meta = checkpoint / "meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


def describe(checkpoint: Path) -> dict:
    """What `causeway convert inspect` prints."""
    cfg, meta, table = (
        checkpoint_config(checkpoint),
        checkpoint_meta(checkpoint),
        tensor_table(checkpoint),
    )
    model_tensors = {k: v for k, v in table.items() if k.startswith("model.")}
    nbytes = sum(
        torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        for shape, dtype in model_tensors.values()
    )
    m = cfg.model
    return {
        "checkpoint": str(checkpoint),
        "step": meta.get("step"),
        "committed": is_committed(checkpoint),
        "model": {
            "arch": m.arch,
            "visibility": m.visibility,
            "d_model": m.d_model,
            "n_layers": m.n_layers,
            "n_heads": m.n_heads,
            "vocab_size": m.vocab_size,
        },  # fmt: skip
        "objective": cfg.objective.name,
        "saved_layout": meta.get("layout", "unknown"),
        "tensors": len(model_tensors),
        "bytes": nbytes,
        "provenance": meta.get("provenance", []),
    }


def verify(checkpoint: Path) -> dict:
    """`causeway convert inspect --verify`: every file's size and checksum against the
    commit record (CorruptCheckpoint, exit status 2, naming the first that differs)."""
    checked = verify_checksums(checkpoint)
    if checked is None:
        print(f"causeway: {checkpoint} has no commit record to verify", file=sys.stderr)
        return {"verified": None}
    files, nbytes = checked
    print(f"causeway: OK, {files} files, {nbytes} bytes match the commit record", file=sys.stderr)
    return {"verified": {"files": files, "bytes": nbytes}}


def load_checkpoint_model(checkpoint: Path, allow_partial: bool = False):
    """The checkpoint's model on the CPU, without spending time on a random init that the
    weights would overwrite (only the RoPE tables, which are not stored, are computed)."""
    from causeway.checkpoint.weights import load_model_weights
    from causeway.models import build_model

    model = build_model(checkpoint_config(checkpoint).model, "meta").to_empty(device="cpu")
    model.rope.reset_parameters()
    load_model_weights(checkpoint, model, allow_partial=allow_partial)
    return model


def consolidate(checkpoint: str | Path, out_file: str | Path, allow_partial=False) -> Path:
    """Write one safetensors file of the full model (single-device names)."""
    from safetensors.torch import save_file

    source = readable_checkpoint(checkpoint, allow_partial)
    out_file = Path(out_file)
    if out_file.exists():
        raise ValueError(f"{out_file} exists; consolidate never overwrites")
    model = load_checkpoint_model(source, allow_partial)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_file), metadata={"source": str(source)})
    return out_file


def fresh_output(out: Path, source: Path) -> Path:
    """`out` resolved, refused when it overlaps `source` or holds anything: conversions
    never overwrite."""
    out, source = Path(out).resolve(), Path(source).resolve()
    if out == source or source in out.parents or out in source.parents:
        raise ValueError(f"output {out} overlaps the source {source}; choose another")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {out} exists and is not empty; conversions never overwrite")
    return out


def save_imported(
    cfg: RunConfig, state: dict[str, torch.Tensor], out: Path, source: Path, conversion: str
) -> Path:
    """Weights from another format (causeway names, any float dtype) checked against the
    model `cfg` describes, shape by shape, and written as the committed checkpoint
    OUT/checkpoints/step_0 with the source in its provenance."""
    from causeway.checkpoint.commit import save_final
    from causeway.models import build_model, materialize

    model = materialize(build_model(cfg.model), "cpu", seed=0)
    expected = model.state_dict()
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"{source}: the weights do not make the model its settings describe: "
            f"missing {missing[:5]}, unexpected {unknown[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, the settings give "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    provenance = [{"source": str(Path(source).resolve()), "step": None, "conversion": conversion}]
    return save_final(out, 0, cfg, [model], meta={"provenance": provenance})
