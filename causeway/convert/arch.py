"""Architecture conversion: the paper's adaptations, done on checkpoints.

- `convert_arch`: same weights, another visibility/objective (ND -> CD for LM
  adaptation, CD -> ND for non-causal MLM adaptation, decoder -> bidirectional encoder).
  Causal and prefix decoders have identical parameters; only the mask differs.
- `to_encoder_decoder`: an encoder-decoder whose encoder and decoder stacks both start
  from the decoder's blocks and whose cross-attention starts from self-attention.

Outputs are run-like directories (OUT/checkpoints/step_N/) so `--init-from OUT` works;
sources are never overwritten, and provenance is appended to meta.json.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch

from causeway.checkpoint.commit import COMMIT_MARKER, mark_committed, save_final
from causeway.checkpoint.integrity import check_intact
from causeway.config import RunConfig
from causeway.config.checks import check_config
from causeway.convert.checkpoints import (
    checkpoint_config,
    checkpoint_meta,
    fresh_output,
    load_checkpoint_model,
    readable_checkpoint,
)
from causeway.models import build_model, materialize


def provenance(source: Path, conversion: str) -> list[dict]:
    meta = checkpoint_meta(source)
    entry = {"source": str(source), "step": meta.get("step"), "conversion": conversion}
    return [*meta.get("provenance", []), entry]


def convert_arch(
    checkpoint: str | Path,
    visibility: str,
    objective: str | None,
    out: str | Path,
    keep_optimizer: bool = False,
    allow_partial: bool = False,
) -> Path:
    """The weights unchanged under a rewritten, validated config. The optimizer (and data
    position) are dropped unless `keep_optimizer`: an adaptation is a new run."""
    source = readable_checkpoint(checkpoint, allow_partial)
    cfg = checkpoint_config(source)
    if cfg.model.arch != "decoder":
        raise ValueError("convert arch changes a decoder's visibility; this is an encoder-decoder")
    before = f"{cfg.model.visibility}/{cfg.objective.name}"
    cfg.model.visibility = visibility
    if objective:
        cfg.objective.name = objective
    cfg = check_config(cfg)
    out = fresh_output(Path(out), source)
    step = checkpoint_meta(source).get("step", 0)
    conversion = f"arch {before} -> {visibility}/{cfg.objective.name}"
    if not keep_optimizer:
        meta = {"provenance": provenance(source, conversion)}
        model = load_checkpoint_model(source, allow_partial)
        return save_final(out, step, cfg, [model], meta=meta)
    target = out / "checkpoints" / f"step_{step}"
    # A copy is committed afresh: a corrupt source would pass for an intact one.
    check_intact(source, verify=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(COMMIT_MARKER, "*.yaml"))
    return rewrite_and_commit(target, cfg, source, conversion)


def rewrite_and_commit(target: Path, cfg: RunConfig, source: Path, conversion: str) -> Path:
    import json

    from causeway.config import save_config

    save_config(cfg, target / "config.yaml")
    meta = {**checkpoint_meta(source), "provenance": provenance(source, conversion)}
    (target / "meta.json").write_text(json.dumps(meta))
    mark_committed(target, meta.get("step", 0))
    return target


def encoder_decoder_config(cfg: RunConfig) -> RunConfig:
    ed = copy.deepcopy(cfg)
    ed.model.arch, ed.model.visibility = "encoder_decoder", "prefix"
    ed.model.n_encoder_layers = cfg.model.n_layers
    if ed.objective.name not in ("prefix_lm", "span_corruption", "mtf"):
        ed.objective.name = "prefix_lm"
    ed.data.inputs_length = ed.data.targets_length = None
    return check_config(ed)


@torch.no_grad()
def to_encoder_decoder(checkpoint: str | Path, out: str | Path, allow_partial=False) -> Path:
    """Initialise an encoder-decoder from a decoder checkpoint (paper's adaptation)."""
    source = readable_checkpoint(checkpoint, allow_partial)
    cfg = checkpoint_config(source)
    if cfg.model.arch != "decoder":
        raise ValueError(f"{source} is already an encoder-decoder")
    out = fresh_output(Path(out), source)
    decoder = load_checkpoint_model(source, allow_partial)
    ed_cfg = encoder_decoder_config(cfg)
    ed = materialize(build_model(ed_cfg.model), "cpu", seed=0)
    ed.load_state_dict(encoder_decoder_state(decoder.state_dict()), strict=True)
    meta = {"provenance": provenance(source, "to-encoder-decoder")}
    step = checkpoint_meta(source).get("step", 0)
    return save_final(out, step, ed_cfg, [ed], meta=meta)


def encoder_decoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decoder names -> encoder-decoder names: blocks twice, self-attention as cross too."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("layers."):
            out["encoder_" + key] = value.clone()
            out[key] = value.clone()
            if ".attention." in key:
                out[key.replace(".attention.", ".cross_attention.")] = value.clone()
            if ".attention_norm." in key:
                out[key.replace(".attention_norm.", ".cross_norm.")] = value.clone()
        elif key.startswith("norm."):
            out[key] = value.clone()
            out["encoder_" + key] = value.clone()
        else:
            out[key] = value.clone()
    return out
