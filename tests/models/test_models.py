"""Model structure: tied/untied output, gated MLPs, GQA shapes, initialisation, z-loss,
meta-device building and materialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import causeway.models.attention as attention_module
from causeway.models import build_model, materialize, model_inputs
from causeway.models.flops import count_parameters
from causeway.models.layers import GatedMLP
from causeway.models.loss import linear_loss_sums, loss_sums

from .reference import packed_decoder_batch, tiny_config, tiny_model

ARCHS = ["decoder", "encoder_decoder"]
# std of a normal truncated at +-3 std, relative to the untruncated std
TRUNCATED_STD = math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / 2**0.5))


def run(model, tokens):
    if model.cfg.arch == "encoder_decoder":
        return model(tokens, tokens[:, :5])
    return model(tokens)


# ------------------------------------------------------------------ tied / untied output


@pytest.mark.parametrize("arch", ARCHS)
def test_tied_embeddings_produce_logits_with_the_embedding_matrix(arch):
    model = tiny_model(arch=arch, tie_embeddings=True)
    assert model.output is None
    assert not any(name.startswith("output") for name, _ in model.named_parameters())
    final = []
    model.norm.register_forward_hook(lambda m, a, out: final.append(out))
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 9))
    logits = run(model, tokens)
    torch.testing.assert_close(logits, final[-1] @ model.embed.weight.T)
    # One matrix serves both ends: its gradient collects from the input and the output.
    logits.sum().backward()
    assert model.embed.weight.grad[tokens.unique()].abs().sum() > 0
    unused = torch.ones(model.cfg.vocab_size, dtype=torch.bool)
    unused[tokens.unique()] = False
    assert model.embed.weight.grad[unused].abs().sum() > 0  # only the output path reaches these


@pytest.mark.parametrize("arch", ARCHS)
def test_untied_embeddings_have_a_separate_output_matrix(arch):
    tied = tiny_model(arch=arch, tie_embeddings=True)
    model = tiny_model(arch=arch, tie_embeddings=False)
    cfg = model.cfg
    assert isinstance(model.output, nn.Linear) and model.output.bias is None
    assert model.output.weight.shape == (cfg.vocab_size, cfg.d_model)
    assert model.output.weight.data_ptr() != model.embed.weight.data_ptr()
    assert not torch.equal(model.output.weight, model.embed.weight)
    assert count_parameters(model) - count_parameters(tied) == cfg.vocab_size * cfg.d_model
    final = []
    model.norm.register_forward_hook(lambda m, a, out: final.append(out))
    logits = run(model, torch.randint(0, cfg.vocab_size, (2, 9)))
    torch.testing.assert_close(logits, final[-1] @ model.output.weight.T)
    assert (logits - final[-1] @ model.embed.weight.T).abs().max() > 1e-2


# ------------------------------------------------------------------ gated MLPs


def test_swiglu_and_geglu_follow_their_formulas_and_differ():
    torch.manual_seed(0)
    swiglu = GatedMLP(8, 16, "swiglu")
    geglu = GatedMLP(8, 16, "geglu")
    geglu.load_state_dict(swiglu.state_dict())
    x = torch.randn(3, 8)
    a, b = x @ swiglu.w1.weight.T, x @ swiglu.w3.weight.T
    torch.testing.assert_close(swiglu(x), (F.silu(a) * b) @ swiglu.w2.weight.T)
    gelu = F.gelu(a, approximate="tanh")  # T5's gated GELU ("gelu_new")
    torch.testing.assert_close(geglu(x), (gelu * b) @ swiglu.w2.weight.T)
    assert (swiglu(x) - geglu(x)).abs().max() > 1e-3


def test_mlp_choice_changes_the_model_output_not_its_shapes():
    swiglu = tiny_model(mlp="swiglu")
    geglu = tiny_model(mlp="geglu")
    shapes = {k: v.shape for k, v in swiglu.state_dict().items()}
    assert shapes == {k: v.shape for k, v in geglu.state_dict().items()}
    geglu.load_state_dict(swiglu.state_dict())
    tokens = torch.randint(0, 64, (2, 8))
    assert (swiglu(tokens) - geglu(tokens)).abs().max() > 1e-3


# ------------------------------------------------------------------ grouped-query attention


@pytest.mark.parametrize(("n_kv_heads", "head_dim"), [(None, None), (2, None), (1, 16), (2, 4)])
def test_gqa_projection_and_kv_shapes(monkeypatch, n_kv_heads, head_dim):
    model = tiny_model(n_heads=4, n_kv_heads=n_kv_heads, head_dim=head_dim, n_layers=1)
    cfg = model.cfg
    kv, dim = cfg.kv_heads, cfg.dim_per_head
    assert kv == (n_kv_heads or 4) and dim == (head_dim or cfg.d_model // 4)
    attn = model.layers["0"].attention
    assert attn.wq.weight.shape == (4 * dim, cfg.d_model)
    assert attn.wk.weight.shape == (kv * dim, cfg.d_model)
    assert attn.wv.weight.shape == (kv * dim, cfg.d_model)
    assert attn.wo.weight.shape == (cfg.d_model, 4 * dim)
    seen = []
    real_attend = attention_module.attend

    def spy(q, k, v, mask, dropout):
        seen.append((q.shape, k.shape, v.shape))
        return real_attend(q, k, v, mask, dropout)

    monkeypatch.setattr(attention_module, "attend", spy)
    out = model(torch.randint(0, cfg.vocab_size, (2, 7)))
    assert seen == [((2, 4, 7, dim), (2, kv, 7, dim), (2, kv, 7, dim))]
    assert out.shape == (2, 7, cfg.vocab_size)


# ------------------------------------------------------------------ initialisation


def pooled_std(tensors) -> float:
    return float(torch.cat([t.detach().flatten() for t in tensors]).std())


def init_model(arch="decoder", n_layers=4, seed=0, **overrides):
    cfg = tiny_config(
        arch=arch, vocab_size=256, d_model=128, n_layers=n_layers, n_heads=4, d_ff=256,
        init_std=0.02, **overrides,
    )  # fmt: skip
    return cfg, materialize(build_model(cfg), "cpu", seed=seed)


def check_block_init(layers, std, out_std, cross=False):
    attns = [layer.attention for layer in layers]
    if cross:
        attns += [layer.cross_attention for layer in layers]
    for name in ("wq", "wk", "wv"):
        measured = pooled_std(getattr(a, name).weight for a in attns)
        assert measured == pytest.approx(std * TRUNCATED_STD, rel=0.03), name
    for name, weights, expected in [
        ("w1", [layer.mlp.w1.weight for layer in layers], std),
        ("w3", [layer.mlp.w3.weight for layer in layers], std),
        ("wo", [a.wo.weight for a in attns], out_std),
        ("w2", [layer.mlp.w2.weight for layer in layers], out_std),
    ]:
        assert pooled_std(weights) == pytest.approx(expected * TRUNCATED_STD, rel=0.03), name
        assert max(float(w.detach().abs().max()) for w in weights) <= 3 * expected + 1e-7, name
    for layer in layers:
        norms = [layer.attention_norm, layer.mlp_norm] + ([layer.cross_norm] if cross else [])
        assert all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in norms)


def test_decoder_init_is_depth_scaled():
    cfg, model = init_model(n_layers=4)
    std = cfg.init_std
    out_std = std / math.sqrt(2 * cfg.n_layers)
    assert out_std == pytest.approx(0.02 / math.sqrt(8))
    check_block_init(list(model.layers.values()), std, out_std)
    assert pooled_std([model.embed.weight]) == pytest.approx(std, rel=0.03)
    assert torch.equal(model.norm.weight, torch.ones_like(model.norm.weight))


def test_encoder_decoder_init_is_depth_scaled_per_stack():
    cfg, model = init_model("encoder_decoder", n_layers=2, n_encoder_layers=4, visibility="prefix")
    std = cfg.init_std
    encoder = list(model.encoder_layers.values())
    decoder = list(model.layers.values())
    check_block_init(encoder, std, std / math.sqrt(2 * cfg.encoder_layers))
    check_block_init(decoder, std, std / math.sqrt(2 * cfg.n_layers), cross=True)


def test_depth_scaled_init_uses_the_configured_depth_on_a_pipeline_stage():
    """As parallel/apply.py does: build on meta, split for the pipeline (a stage drops
    the layers it does not own from the ModuleDict), then materialise and initialise. A
    stage's output projections must get init_std / sqrt(2 * n_layers) of the whole model, as on one
    device, not a std computed from the number of layers the stage happens to hold."""
    cfg = tiny_config(vocab_size=256, d_model=128, n_layers=8, n_heads=4, d_ff=256, init_std=0.02)
    stage = build_model(cfg)
    for name in ("0", "1", "2", "3", "4", "5"):
        del stage.layers[name]  # this stage owns layers 6 and 7
    materialize(stage, "cpu", seed=0)
    out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    wo = [layer.attention.wo.weight for layer in stage.layers.values()]
    assert pooled_std(wo) == pytest.approx(out_std * TRUNCATED_STD, rel=0.03)


def test_encoder_decoder_stage_init_uses_the_configured_depths():
    """As above for the encoder-decoder: a stage holding some encoder and some decoder
    layers scales by the configured encoder and decoder depths."""
    cfg = tiny_config(
        arch="encoder_decoder", visibility="prefix", vocab_size=256, d_model=128,
        n_layers=6, n_encoder_layers=8, n_heads=4, d_ff=256, init_std=0.02,
    )  # fmt: skip
    stage = build_model(cfg)
    for name in ("0", "1", "2", "3", "4", "5"):
        del stage.encoder_layers[name]  # keeps encoder layers 6 and 7
    for name in ("0", "1", "2", "3"):
        del stage.layers[name]  # keeps decoder layers 4 and 5
    materialize(stage, "cpu", seed=0)
    std = cfg.init_std
    check_block_init(list(stage.encoder_layers.values()), std, std / math.sqrt(2 * 8))
    check_block_init(list(stage.layers.values()), std, std / math.sqrt(2 * 6), cross=True)


# ------------------------------------------------------------------ loss and z-loss
# LossSums: `loss` = ce + z_weight * z is the differentiable sum; `ce`, `z` and `tokens` are
# the reported sums.


def hand_logits():
    """Two rows of three positions; logsumexp is known in closed form for each."""
    ln = math.log
    rows = [
        [[0.0, 0.0, 0.0, 0.0], [ln(1), ln(2), ln(3), ln(4)], [9.0, -9.0, 3.0, 1.0]],
        [[ln(4), ln(4), ln(4), ln(4)], [0.0, 0.0, 0.0, 0.0], [2.0, 0.5, -1.0, 7.0]],
    ]
    targets = torch.tensor([[1, 3, 2], [0, 2, 1]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    return torch.tensor(rows), targets, mask


def test_loss_sums_on_a_hand_example():
    logits, targets, mask = hand_logits()
    ln = math.log
    # Loss positions: (0,0) lse=ln4, target logit 0; (0,1) lse=ln10, target ln4;
    # (1,0) lse=ln16, target ln4.
    lse = [ln(4), ln(10), ln(16)]
    ce = (ln(4) - 0) + (ln(10) - ln(4)) + (ln(16) - ln(4))
    z = sum(v * v for v in lse)
    sums = loss_sums(logits, targets, mask, z_weight=1e-4)
    assert int(sums.tokens) == 3
    assert float(sums.ce) == pytest.approx(ce, rel=1e-6)
    assert float(sums.z) == pytest.approx(z, rel=1e-6)
    assert float(sums.z / sums.tokens) == pytest.approx(z / 3, rel=1e-6)  # mean lse^2
    expected_ce = F.cross_entropy(logits[mask], targets[mask], reduction="sum")
    torch.testing.assert_close(sums.ce, expected_ce)
    assert float(sums.loss) == pytest.approx(ce + 1e-4 * z, rel=1e-6)
    assert float(sums.total(sums.tokens)) == pytest.approx((ce + 1e-4 * z) / 3, rel=1e-6)


def test_z_weight_changes_only_the_differentiable_loss():
    logits, targets, mask = hand_logits()
    plain = loss_sums(logits, targets, mask)
    with_z = loss_sums(logits, targets, mask, z_weight=1e-2)
    torch.testing.assert_close(plain.ce, with_z.ce)
    torch.testing.assert_close(plain.z, with_z.z)
    torch.testing.assert_close(plain.loss, plain.ce)
    torch.testing.assert_close(with_z.loss, with_z.ce + 1e-2 * with_z.z)
    torch.testing.assert_close(
        plain.ce, F.cross_entropy(logits[mask], targets[mask], reduction="sum")
    )


@pytest.mark.parametrize("z_weight", [0.0, 1e-2])
def test_masked_positions_contribute_nothing(z_weight):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    mask = torch.rand(2, 5) > 0.4
    assert mask.any() and (~mask).any()
    base = loss_sums(logits, targets, mask, z_weight)
    changed_logits = logits.clone()
    changed_logits[~mask] = 1e4 * torch.randn_like(changed_logits[~mask])
    changed_targets = targets.masked_fill(~mask, 7)
    other = loss_sums(changed_logits, changed_targets, mask, z_weight)
    for name in ("loss", "ce", "z", "tokens"):
        assert torch.equal(getattr(base, name), getattr(other, name)), name
    leaf = logits.clone().requires_grad_(True)
    loss_sums(leaf, targets, mask, z_weight).total(1.0).backward()
    assert torch.all(leaf.grad[~mask] == 0)
    assert torch.all(leaf.grad[mask].abs().sum(-1) > 0)
    # d/dlogits of (lse - logit[target]) + w lse^2 = softmax (1 + 2 w lse) - onehot
    lse = torch.logsumexp(logits, -1, keepdim=True)
    onehot = F.one_hot(targets, 11).float()
    expected = logits.softmax(-1) * (1 + 2 * z_weight * lse) - onehot
    torch.testing.assert_close(leaf.grad, torch.where(mask[..., None], expected, 0.0))


@pytest.mark.parametrize("z_weight", [0.0, 1e-2])
@pytest.mark.parametrize("chunk", [4, 7, 256])
def test_fused_linear_loss_matches_unfused_loss(z_weight, chunk):
    """linear_loss_sums (chunked, logits never whole) = loss_sums(hidden @ weight.T)."""
    torch.manual_seed(1)
    hidden = torch.randn(3, 6, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 40, (3, 6))
    mask = torch.rand(3, 6) > 0.3
    fused = linear_loss_sums(hidden, weight, targets, mask, z_weight, chunk=chunk)
    grads = torch.autograd.grad(fused.total(5.0), (hidden, weight))
    reference = loss_sums(hidden @ weight.T, targets, mask, z_weight)
    expected = torch.autograd.grad(reference.total(5.0), (hidden, weight))
    for name in ("loss", "ce", "z"):
        torch.testing.assert_close(getattr(fused, name), getattr(reference, name))
    assert int(fused.tokens) == int(reference.tokens) == int(mask.sum())
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("arch", ARCHS)
def test_model_forward_with_targets_matches_loss_on_logits(arch):
    model = tiny_model(arch=arch, tie_embeddings=arch == "decoder")
    torch.manual_seed(2)
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 9))
    dec = tokens if arch == "decoder" else tokens[:, :5]
    targets = torch.roll(dec, -1, dims=1)
    mask = torch.rand(dec.shape) > 0.3
    inputs = (tokens,) if arch == "decoder" else (tokens, dec)
    fused = model(*inputs, targets=targets, loss_mask=mask, z_weight=1e-3)
    fused.total(fused.tokens).backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    reference = loss_sums(model(*inputs), targets, mask, z_weight=1e-3)
    reference.total(reference.tokens).backward()
    torch.testing.assert_close(fused.loss, reference.loss)
    torch.testing.assert_close(fused.ce, reference.ce)
    for name, param in model.named_parameters():
        torch.testing.assert_close(fused_grads[name], param.grad, atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------ meta device, materialize


@pytest.mark.parametrize("arch", ARCHS)
def test_build_on_meta_allocates_nothing(arch):
    model = build_model(tiny_config(arch=arch))
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.is_meta for t in tensors)
    # A paper-size model builds on meta in no time and no memory (19 GB in fp32 otherwise).
    big = build_model(
        tiny_config(arch=arch, vocab_size=32128, d_model=4096, n_layers=24, n_heads=64, d_ff=10240)
    )
    assert all(p.is_meta for p in big.parameters()) and count_parameters(big) > 4e9


@pytest.mark.parametrize("arch", ARCHS)
def test_materialize_is_finite_and_deterministic(arch):
    cfg = tiny_config(arch=arch, init_std=0.02)

    def state(seed):
        torch.manual_seed(1234 + seed)  # the global RNG must not matter, only the seed
        model = materialize(build_model(cfg), "cpu", seed=seed)
        assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
        return {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}, model

    first, model = state(7)
    second, _ = state(7)
    third, _ = state(8)
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, second[name]), name
    assert any(not torch.equal(first[k], third[k]) for k in first if k.endswith("wq.weight"))
    # Non-persistent RoPE tables are initialised too (cos(0) = 1, sin(0) = 0).
    assert torch.isfinite(model.rope.cos).all() and torch.isfinite(model.rope.sin).all()
    assert torch.equal(model.rope.cos[0], torch.ones_like(model.rope.cos[0]))
    assert torch.equal(model.rope.sin[0], torch.zeros_like(model.rope.sin[0]))
    assert torch.isfinite(run(model, torch.randint(0, cfg.vocab_size, (2, 8)))).all()


def test_model_inputs_picks_the_forward_keys():
    segment_ids, positions, prefix_lengths = packed_decoder_batch()
    batch = dict(
        tokens=segment_ids.long(), targets=segment_ids.long(), loss_mask=segment_ids > 0,
        positions=positions, segment_ids=segment_ids, prefix_lengths=prefix_lengths,
    )  # fmt: skip
    assert set(model_inputs(batch, "decoder")) == {
        "tokens", "positions", "segment_ids", "prefix_lengths"
    }  # fmt: skip
    seq2seq = dict(enc_tokens=1, dec_tokens=2, targets=3, enc_segment_ids=4, loss_mask=5)
    assert set(model_inputs(seq2seq, "encoder_decoder")) == {
        "enc_tokens", "dec_tokens", "enc_segment_ids"
    }  # fmt: skip
