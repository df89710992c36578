"""Initial weights are a function of the seed and each parameter's single-device name."""

from __future__ import annotations

import pytest
import torch

from causeway.models import build_model, materialize
from causeway.parallel.activation_checkpoint import apply_activation_checkpointing
from causeway.parallel.pipeline import make_stage

from .reference import tiny_config


def weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_one_seed_one_set_of_weights_another_seed_others(arch):
    cfg = tiny_config(arch=arch, n_layers=4)
    a = weights(materialize(build_model(cfg), "cpu", seed=7))
    torch.manual_seed(123)  # the global generator plays no part
    b = weights(materialize(build_model(cfg), "cpu", seed=7))
    c = weights(materialize(build_model(cfg), "cpu", seed=8))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    differ = [k for k in a if not torch.equal(a[k], c[k])]
    assert len(differ) == len([k for k in a if "norm" not in k])  # norms start at one


def test_pipeline_stages_hold_exactly_the_whole_models_weights():
    cfg = tiny_config(n_layers=4, tie_embeddings=True)
    whole = weights(materialize(build_model(cfg), "cpu", seed=3))
    for stage in range(2):
        part = make_stage(build_model(cfg, "meta"), stage, 2)
        got = weights(materialize(part, "cpu", seed=3))
        assert got and all(torch.equal(got[k], whole[k]) for k in got)
        # the last stage's copy of the tied embedding equals the first stage's
        assert ("embed.weight" in got) == (stage in (0, 1))


def test_checkpoint_wrappers_do_not_change_the_weights():
    cfg = tiny_config(n_layers=4)
    plain = weights(materialize(build_model(cfg), "cpu", seed=5))
    wrapped = build_model(cfg, "meta")
    apply_activation_checkpointing(wrapped, "full")
    got = weights(materialize(wrapped, "cpu", seed=5))
    assert got.keys() == plain.keys() and all(torch.equal(got[k], plain[k]) for k in got)
