"""The paper recipes build the sizes that Wang et al. 2022 state (4.8B decoders, 11.0B ED)."""

from __future__ import annotations

from pathlib import Path

import pytest

from causeway.config import load_config
from causeway.config.schema import ModelConfig
from causeway.models import build_model
from causeway.models.flops import count_parameters

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER_RECIPES = sorted(CONFIGS.glob("paper-*.yaml"))


def closed_form_parameters(m: ModelConfig) -> int:
    """Count from the architecture: RMSNorm gains, q/k/v/o, three gated-MLP matrices."""
    head_dim = m.head_dim or m.d_model // m.n_heads
    kv_heads = m.n_kv_heads or m.n_heads
    attention = m.d_model * head_dim * (m.n_heads + kv_heads + kv_heads + m.n_heads)
    mlp = 3 * m.d_model * m.d_ff
    norm = m.d_model
    embedding = m.vocab_size * m.d_model * (1 if m.tie_embeddings else 2)
    self_layer = 2 * norm + attention + mlp
    if m.arch == "decoder":
        return embedding + m.n_layers * self_layer + norm
    encoder_layers = m.n_encoder_layers or m.n_layers
    cross_layer = self_layer + norm + attention
    return embedding + encoder_layers * self_layer + m.n_layers * cross_layer + 2 * norm


def test_all_paper_recipes_are_found():
    names = {p.stem for p in PAPER_RECIPES}
    assert len(names) >= 6, names
    assert any("-ed-" in n for n in names) and any("-cd-" in n for n in names)
    assert any("-nd-" in n for n in names)


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=[p.stem for p in PAPER_RECIPES])
def test_paper_recipe_parameter_count(path):
    cfg = load_config(str(path)).model
    model = build_model(cfg)  # meta device
    assert all(p.is_meta for p in model.parameters())
    count = count_parameters(model)
    assert count == closed_form_parameters(cfg)
    # The paper: 24 layers, d_model 4096, 64 heads x 64, d_ff 10240, gated GELU, tied,
    # vocabulary 32128.
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.dim_per_head, cfg.d_ff) == (
        24, 4096, 64, 64, 10240,
    )  # fmt: skip
    assert cfg.mlp == "geglu" and cfg.tie_embeddings and cfg.vocab_size == 32128
    if cfg.arch == "encoder_decoder":
        assert cfg.encoder_layers == 24
        assert 10.8e9 <= count <= 11.2e9, count
    else:
        assert 4.6e9 <= count <= 5.0e9, count


def test_paper_decoder_breakdown_matches_paper_md():
    """The paper: about 4.8B = 24 x 193M + 0.13B embedding."""
    cfg = load_config(str(CONFIGS / "paper-4.8b-cd-flm.yaml")).model
    model = build_model(cfg)
    layer = sum(p.numel() for p in model.layers["0"].parameters())
    assert layer == pytest.approx(193e6, rel=0.01)
    assert model.embed.weight.numel() == pytest.approx(0.13e9, rel=0.02)


def test_closed_form_counts_untied_and_gqa_variants():
    """The closed form is not tuned to the paper configs: it also holds for untied output,
    GQA, an explicit head_dim and an encoder of another depth."""
    variants = [
        ModelConfig(tie_embeddings=False),
        ModelConfig(n_kv_heads=2, head_dim=48),
        ModelConfig(arch="encoder_decoder", n_encoder_layers=3, n_kv_heads=1),
        ModelConfig(arch="encoder_decoder", tie_embeddings=False),
    ]
    for cfg in variants:
        assert count_parameters(build_model(cfg)) == closed_form_parameters(cfg), cfg
