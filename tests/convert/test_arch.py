"""Architecture conversion, inspection and consolidation on real checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from causeway.checkpoint.discovery import resolve_checkpoint
from causeway.checkpoint.weights import load_model_weights
from causeway.config import load_config
from causeway.convert.arch import convert_arch, to_encoder_decoder
from causeway.convert.checkpoints import checkpoint_config, consolidate, describe
from causeway.models import build_model, materialize
from causeway.train.trainer import Trainer, run_training

SMALL = ["train.steps=2", "train.log_every=1"]


@pytest.fixture(scope="module")
def nd_mlm_run(builtin_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("nd-mlm")
    run_training(load_config("tiny-nd-mlm", SMALL), run)
    return run


def weights(checkpoint, cfg=None):
    cfg = cfg or checkpoint_config(checkpoint)
    model = materialize(build_model(cfg.model), "cpu", seed=99)
    load_model_weights(checkpoint, model)
    return model


def test_nd_to_cd_keeps_weights_rewrites_config_and_records_provenance(nd_mlm_run, tmp_path):
    out = convert_arch(nd_mlm_run, "causal", "full_lm", tmp_path / "cd")
    cfg = checkpoint_config(out)
    assert (cfg.model.visibility, cfg.objective.name) == ("causal", "full_lm")
    source = resolve_checkpoint(nd_mlm_run)
    a, b = weights(source).state_dict(), weights(out).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = describe(out)
    assert info["committed"] and info["step"] == 2
    assert info["provenance"][-1]["conversion"] == "arch prefix/span_corruption -> causal/full_lm"
    assert info["provenance"][-1]["source"] == str(source)


def test_meaningless_conversion_is_refused_and_nothing_is_written(nd_mlm_run, tmp_path):
    with pytest.raises(ValueError, match="refused"):
        convert_arch(nd_mlm_run, "bidirectional", "full_lm", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_conversions_never_overwrite(nd_mlm_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        convert_arch(nd_mlm_run, "causal", "full_lm", tmp_path / "taken")
    with pytest.raises(ValueError, match="overlaps the source"):
        convert_arch(nd_mlm_run, "causal", "full_lm", nd_mlm_run)
    assert (tmp_path / "taken" / "file").read_text() == "keep"


def test_partial_checkpoint_is_refused(nd_mlm_run, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(resolve_checkpoint(nd_mlm_run), partial)
    (partial / "COMMITTED").unlink()
    with pytest.raises(ValueError, match="partial"):
        resolve_checkpoint(partial)
    assert resolve_checkpoint(partial, allow_partial=True) == partial


def test_decoder_to_encoder_decoder_copies_blocks_and_cross_attention(nd_mlm_run, tmp_path):
    out = to_encoder_decoder(nd_mlm_run, tmp_path / "ed")
    cfg = checkpoint_config(out)
    assert cfg.model.arch == "encoder_decoder" and cfg.model.n_encoder_layers == 2
    dec = weights(resolve_checkpoint(nd_mlm_run)).state_dict()
    ed = weights(out).state_dict()
    assert torch.equal(ed["encoder_layers.1.mlp.w2.weight"], dec["layers.1.mlp.w2.weight"])
    assert torch.equal(
        ed["layers.0.cross_attention.wq.weight"], dec["layers.0.attention.wq.weight"]
    )
    assert torch.equal(ed["encoder_norm.weight"], dec["norm.weight"])
    assert json.loads((out / "meta.json").read_text())["provenance"][-1]["conversion"] == (
        "to-encoder-decoder"
    )


def test_adaptation_walkthrough_nd_mlm_to_cd_flm(nd_mlm_run, tmp_path):
    converted = convert_arch(nd_mlm_run, "causal", "full_lm", tmp_path / "cd")
    cfg = load_config("tiny-cd-flm", [*SMALL, f"checkpoint.init_from={tmp_path / 'cd'}"])
    trainer = Trainer(cfg, tmp_path / "adapt")
    trainer.setup()
    # The adaptation starts from the converted weights, bit for bit, not a fresh init.
    start, want = trainer.pm.parts[0].state_dict(), weights(converted).state_dict()
    assert start.keys() == want.keys()
    assert all(torch.equal(start[k], want[k]) for k in want)
    records = trainer.fit()
    assert len(records) == 2
    assert converted.parent.parent == tmp_path / "cd"


def test_consolidate_writes_single_device_names(nd_mlm_run, tmp_path):
    path = consolidate(nd_mlm_run, tmp_path / "model.safetensors")
    tensors = load_file(str(path))
    model = weights(resolve_checkpoint(nd_mlm_run)).state_dict()
    assert tensors.keys() == model.keys()
    assert all(torch.equal(tensors[k], model[k]) for k in model)
    with pytest.raises(ValueError, match="never overwrites"):
        consolidate(nd_mlm_run, path)


def test_inspect_reports_layout_and_size(nd_mlm_run):
    info = describe(resolve_checkpoint(nd_mlm_run))
    assert info["saved_layout"]["world_size"] == 1
    assert info["tensors"] == len(weights(resolve_checkpoint(nd_mlm_run)).state_dict())
    assert info["bytes"] > 0 and info["model"]["visibility"] == "prefix"


def test_optimizer_is_dropped_unless_kept(nd_mlm_run, tmp_path):
    from causeway.checkpoint.training_state import tensor_table

    dropped = convert_arch(nd_mlm_run, "causal", "full_lm", tmp_path / "a")
    kept = convert_arch(nd_mlm_run, "causal", "full_lm", tmp_path / "b", keep_optimizer=True)
    assert not any(k.startswith("optimizer.") for k in tensor_table(dropped))
    assert any(k.startswith("optimizer.") for k in tensor_table(kept))
    assert {k for k in tensor_table(dropped) if k.startswith("model.")} == {
        k for k in tensor_table(kept) if k.startswith("model.")
    }


def test_partial_source_needs_allow_partial(nd_mlm_run, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(resolve_checkpoint(nd_mlm_run), partial)
    (partial / "COMMITTED").unlink()
    with pytest.raises(ValueError, match="--allow-partial"):
        convert_arch(partial, "causal", "full_lm", tmp_path / "x")
    out = convert_arch(partial, "causal", "full_lm", tmp_path / "y", allow_partial=True)
    assert (out / "COMMITTED").is_file()
