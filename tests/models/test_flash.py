"""The flash-attn path.

CPU (always run): the pure-index helpers, the layouts they build, and `flash.attend` run
against a test-side emulation of `flash_attn_varlen_func` (per-sequence softmax attention,
causal masks aligned bottom-right as flash-attn >= 2.1 does), compared with SDPA under the
dense mask. GPU (marked `gpu`): the real kernels against SDPA, forward and gradients, bf16.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from causeway.models import build_model, flash, materialize
from causeway.models.flash import FlashLayout, cu_seqlens, runs
from causeway.models.masks import MaskInputs, dense_mask, self_attention_spec

from .reference import (
    SELF_KINDS,
    WIDTH,
    packed_batch,
    packed_decoder_batch,
    packed_seq2seq_batch,
    reference_mask,
    tiny_config,
    unpacked_decoder_batch,
)

CPU = torch.device("cpu")

# ------------------------------------------------------------------ pure-index helpers


def test_runs_splits_rows_and_segments():
    segments = torch.tensor([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 2, 2]])
    assert runs(segments).tolist() == [2, 3, 1, 4, 2]
    # A row that starts with the segment id the previous row ended with is a new run.
    assert runs(torch.tensor([[1, 1, 1, 1], [1, 1, 2, 2]])).tolist() == [4, 2, 2]
    assert runs(torch.tensor([[1, 2, 0, 0], [1, 2, 3, 0]])).tolist() == [1, 1, 2, 1, 1, 1, 1]
    assert runs(torch.ones(2, 5, dtype=torch.int32)).tolist() == [5, 5]


def test_cu_seqlens():
    out = cu_seqlens(torch.tensor([2, 3, 1]))
    assert out.dtype == torch.int32 and out.tolist() == [0, 2, 5, 6]
    assert cu_seqlens(torch.tensor([0, 4, 0])).tolist() == [0, 0, 4, 4]


def hand_prefix_spec() -> MaskInputs:
    segment_ids = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 2, 2]], dtype=torch.int32)
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
    # row 0: document 1 has a prefix of 2, document 2 of 0; row 1: 4 (whole) and 1
    prefix_lengths = torch.tensor([[0, 2, 0], [0, 4, 1]])
    return self_attention_spec("prefix", 6, segment_ids, positions, prefix_lengths)


def test_flash_layout_for_a_prefix_batch():
    layout = FlashLayout.build(hand_prefix_spec(), CPU)
    assert layout.kind == "prefix"
    # sequences (flattened): [0:3] [3:5] [5:6] | [6:10] [10:12]
    assert layout.q_cu.tolist() == [0, 3, 5, 6, 10, 12]
    assert layout.k_cu.tolist() == [0, 3, 5, 6, 10, 12]
    assert (layout.q_max, layout.k_max) == (4, 4)
    assert layout.prefix_index.tolist() == [0, 1, 6, 7, 8, 9, 10]
    assert layout.target_index.tolist() == [2, 3, 4, 5, 11]
    assert layout.prefix_cu.tolist() == [0, 2, 2, 2, 6, 7]  # prefix lengths 2, 0, 0, 4, 1
    assert layout.target_cu.tolist() == [0, 1, 3, 4, 4, 5]  # target lengths 1, 2, 1, 0, 1
    assert (layout.prefix_max, layout.target_max) == (4, 2)


@pytest.mark.parametrize("kind", ["causal", "bidirectional"])
def test_flash_layout_for_causal_and_bidirectional(kind):
    segment_ids, positions, _ = packed_decoder_batch()
    layout = FlashLayout.build(self_attention_spec(kind, WIDTH, segment_ids, positions, None), CPU)
    # rows [5, 4, 3, pad 4], [7, 6, pad 3], [9, 7]
    expected = [0, 5, 9, 12, 16, 23, 29, 32, 41, 48]
    assert layout.q_cu.tolist() == expected and layout.k_cu.tolist() == expected
    assert (layout.q_max, layout.k_max) == (9, 9) and layout.prefix_index is None
    positions, _ = unpacked_decoder_batch(batch=2, width=12)
    spec = self_attention_spec(kind, 12, None, positions, None)
    layout = FlashLayout.build(spec, CPU)
    assert layout.q_cu.tolist() == [0, 12, 24] and layout.q_max == 12


def sequences(cu: torch.Tensor) -> list[range]:
    """Flattened token indices of every varlen sequence (empty sequences included)."""
    return [range(int(a), int(b)) for a, b in zip(cu[:-1], cu[1:], strict=True)]


def test_cross_layout_pairs_each_decoder_document_with_its_encoder_document():
    """flash-attn pairs query sequence i with key sequence i. Every decoder document must
    be paired with exactly the encoder tokens of the same row and document, also when only
    one side of a row is padded (the packer pads encoder and decoder rows independently)."""
    enc_seg, _, dec_seg, _ = packed_seq2seq_batch()
    batch, dec_len = dec_seg.shape
    enc_len = enc_seg.shape[1]
    spec = MaskInputs("cross", batch, dec_len, enc_len, dec_seg, enc_seg)
    layout = FlashLayout.build(spec, CPU)
    queries, keys = sequences(layout.q_cu), sequences(layout.k_cu)
    assert len(queries) == len(keys), (layout.q_cu.tolist(), layout.k_cu.tolist())
    paired = set()
    for query, key in zip(queries, keys, strict=True):
        if not query:
            continue
        row, doc = query[0] // dec_len, int(dec_seg.reshape(-1)[query[0]])
        if doc == 0:
            continue  # padding queries may see anything
        own = [row * enc_len + s for s in range(enc_len) if int(enc_seg[row, s]) == doc]
        assert list(key) == own, f"row {row} document {doc}: keys {list(key)}, expected {own}"
        paired.add((row, doc))
    documents = {(b, int(d)) for b in range(batch) for d in dec_seg[b].unique() if d > 0}
    assert paired == documents


# ------------------------------------------------------------------ emulated kernels (CPU)


def emulated_varlen(
    q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False
):
    """flash_attn_varlen_func semantics in plain torch: sequence i of q attends to sequence
    i of k; `causal` aligns the mask bottom-right; rows with no key give 0."""
    assert dropout_p == 0.0
    assert cu_q.numel() == cu_k.numel(), "flash-attn pairs query and key sequences one to one"
    heads, dim = q.shape[1], q.shape[2]
    scale = softmax_scale or 1 / math.sqrt(dim)
    outs = []
    for i in range(cu_q.numel() - 1):
        qs = q[int(cu_q[i]) : int(cu_q[i + 1])]
        ks = k[int(cu_k[i]) : int(cu_k[i + 1])].repeat_interleave(heads // k.shape[1], dim=1)
        vs = v[int(cu_k[i]) : int(cu_k[i + 1])].repeat_interleave(heads // v.shape[1], dim=1)
        n_q, n_k = qs.shape[0], ks.shape[0]
        assert n_q <= max_q and n_k <= max_k
        allowed = torch.ones(n_q, n_k, dtype=torch.bool)
        if causal:
            allowed = torch.arange(n_k)[None, :] <= torch.arange(n_q)[:, None] + (n_k - n_q)
        scores = torch.einsum("qhd,khd->hqk", qs, ks) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, -1).nan_to_num(0.0)  # empty rows -> 0
        outs.append(torch.einsum("hqk,khd->qhd", weights, vs))
    return torch.cat(outs) if outs else q.new_zeros(q.shape)


@pytest.fixture
def emulated_flash_attn(monkeypatch):
    module = types.ModuleType("flash_attn")
    module.flash_attn_varlen_func = emulated_varlen
    monkeypatch.setitem(sys.modules, "flash_attn", module)
    return module


def random_qkv(batch, q_len, k_len, heads=4, kv_heads=2, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=generator) * 2
    k = torch.randn(batch, kv_heads, k_len, dim, generator=generator) * 2
    v = torch.randn(batch, kv_heads, k_len, dim, generator=generator)
    return [t.requires_grad_(True) for t in (q, k, v)]


def sdpa_reference(q, k, v, spec):
    mask = dense_mask(spec, CPU)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def compare_with_sdpa(spec, query_rows=None):
    q, k, v = random_qkv(spec.batch, spec.q_len, spec.k_len)
    out = flash.attend(q, k, v, FlashLayout.build(spec, CPU), 0.0)
    expected = sdpa_reference(q, k, v, spec)
    keep = (
        torch.ones(spec.batch, spec.q_len, dtype=torch.bool) if query_rows is None else query_rows
    )
    keep = keep[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[keep], expected[keep], atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(out) * keep
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    expected_grads = torch.autograd.grad((expected * weight).sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", SELF_KINDS)
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_flash_attend_logic_matches_sdpa_with_emulated_kernels(emulated_flash_attn, kind, packed):
    if packed:
        segment_ids, positions, prefix_lengths = packed_decoder_batch()
    else:
        positions, prefix_lengths = unpacked_decoder_batch()
        segment_ids = None
    spec = self_attention_spec(kind, positions.shape[1], segment_ids, positions, prefix_lengths)
    compare_with_sdpa(spec)


def test_emulated_prefix_attention_matches_the_rule(emulated_flash_attn):
    """Independent of SDPA: the two-call prefix scheme gives exactly the loop-built mask."""
    segment_ids, positions, prefix_lengths = packed_decoder_batch()
    spec = self_attention_spec("prefix", WIDTH, segment_ids, positions, prefix_lengths)
    # With v = one-hot of the key index, the output is the attention weight matrix.
    batch = segment_ids.shape[0]
    q, k, _ = random_qkv(batch, WIDTH, WIDTH, heads=1, kv_heads=1, dim=WIDTH)
    v = torch.eye(WIDTH).expand(batch, 1, WIDTH, WIDTH)
    weights = flash.attend(q, k, v, FlashLayout.build(spec, CPU), 0.0)[:, 0]
    expected = reference_mask(
        "prefix", batch, WIDTH, WIDTH, segment_ids, segment_ids, positions, prefix_lengths
    )
    assert torch.equal(weights > 0, expected)


def test_emulated_cross_attention_matches_sdpa(emulated_flash_attn):
    """Decoder documents attend to their own encoder document through the flash layout
    (rows padded on one side only included)."""
    enc_seg, _, dec_seg, _ = packed_seq2seq_batch()
    batch, dec_len = dec_seg.shape
    spec = MaskInputs("cross", batch, dec_len, enc_seg.shape[1], dec_seg, enc_seg)
    compare_with_sdpa(spec, query_rows=dec_seg > 0)


# ------------------------------------------------------------------ real kernels (GPU)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def flash_attn():
    return pytest.importorskip("flash_attn", reason="flash-attn (extra 'gpu') is not installed")


GPU_ROWS = [[40, 30, 50], [64, 60], [128]]
GPU_PREFIXES = [[10, 0, 50], [64, 1], [77]]
GPU_WIDTH = 128


def gpu_pair(**overrides):
    """The same bf16 weights under attention 'flash' and 'sdpa' on CUDA."""
    cfg = tiny_config(
        vocab_size=256, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=512,
        max_seq_len=256, init_std=0.05, attention="flash", **overrides,
    )  # fmt: skip
    model = materialize(build_model(cfg, "cuda"), "cuda", seed=0).to(torch.bfloat16)
    reference = materialize(build_model(cfg, "cuda"), "cuda", seed=0).to(torch.bfloat16)
    reference.cfg = dataclasses.replace(cfg, attention="sdpa")
    return model, reference


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def check_forward_and_grads(model, reference, inputs, targets, loss_mask, tol=2e-2):
    """Logits on loss positions and every parameter gradient agree within bf16 noise."""
    outputs = []
    for m in (model, reference):
        m.zero_grad(set_to_none=True)
        logits = m(**inputs)
        loss = F.cross_entropy(logits[loss_mask].float(), targets[loss_mask])
        loss.backward()
        outputs.append((logits, {n: p.grad for n, p in m.named_parameters()}))
    (logits, grads), (ref_logits, ref_grads) = outputs
    assert relative_error(logits[loss_mask], ref_logits[loss_mask]) < tol
    for name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all(), name
        assert relative_error(grad, ref_grads[name]) < 2 * tol, name


def shifted(tokens: torch.Tensor) -> torch.Tensor:
    return torch.roll(tokens, -1, dims=1)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("kind", SELF_KINDS)
def test_flash_decoder_matches_sdpa_on_cuda(flash_attn, kind):
    model, reference = gpu_pair(visibility=kind)
    segment_ids, positions, prefix_lengths = packed_batch(GPU_ROWS, GPU_WIDTH, GPU_PREFIXES)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, segment_ids.shape, generator=generator)
    inputs = dict(
        tokens=tokens, positions=positions, segment_ids=segment_ids,
        prefix_lengths=prefix_lengths if kind == "prefix" else None,
    )  # fmt: skip
    inputs = {k: v.cuda() if v is not None else None for k, v in inputs.items()}
    loss_mask = inputs["segment_ids"] > 0
    check_forward_and_grads(model, reference, inputs, shifted(inputs["tokens"]), loss_mask)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("kind", SELF_KINDS)
def test_flash_decoder_unpacked_matches_sdpa_on_cuda(flash_attn, kind):
    model, reference = gpu_pair(visibility=kind)
    tokens = torch.randint(0, 256, (2, GPU_WIDTH), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(GPU_WIDTH).expand(2, GPU_WIDTH)
    inputs = dict(tokens=tokens.cuda(), positions=positions.cuda())
    if kind == "prefix":
        inputs["prefix_lengths"] = torch.tensor([[0, 17], [0, 100]]).cuda()
    loss_mask = torch.ones_like(inputs["tokens"], dtype=torch.bool)
    check_forward_and_grads(model, reference, inputs, shifted(inputs["tokens"]), loss_mask)


@pytest.mark.gpu
@requires_cuda
def test_flash_prefix_gradient_never_reaches_invisible_positions(flash_attn):
    model, _ = gpu_pair(visibility="prefix")
    segment_ids, positions, prefix_lengths = packed_batch(GPU_ROWS, GPU_WIDTH, GPU_PREFIXES)
    visible = reference_mask(
        "prefix", 3, GPU_WIDTH, GPU_WIDTH, segment_ids, segment_ids, positions, prefix_lengths
    )
    leaves = []

    def hook(module, args, out):
        leaves.append(out.detach().requires_grad_(True))
        return leaves[-1]

    model.embed.register_forward_hook(hook)
    tokens = torch.randint(0, 256, segment_ids.shape, generator=torch.Generator().manual_seed(2))
    logits = model(tokens.cuda(), positions.cuda(), segment_ids.cuda(), prefix_lengths.cuda())
    for b, t in [(0, 5), (0, 12), (0, 45), (0, 72), (1, 63), (1, 64), (1, 70), (2, 76), (2, 90)]:
        (grad,) = torch.autograd.grad(logits[b, t].float().sum(), leaves, retain_graph=True)
        flow = grad[b].abs().amax(-1).cpu()
        assert torch.all(flow[~visible[b, t]] == 0), (b, t)
        assert torch.all(flow[visible[b, t]] != 0), (b, t)


@pytest.mark.gpu
@requires_cuda
def test_flash_encoder_decoder_matches_sdpa_on_cuda(flash_attn):
    model, reference = gpu_pair(arch="encoder_decoder", visibility="prefix")
    enc_seg, enc_pos, _ = packed_batch([[50, 40], [64, 64], [70]], 128)
    # row 1: only the decoder is padded; row 2: only the encoder
    dec_seg, dec_pos, _ = packed_batch([[20, 30], [30, 30], [64]], 64)
    generator = torch.Generator().manual_seed(3)
    inputs = dict(
        enc_tokens=torch.randint(0, 256, enc_seg.shape, generator=generator),
        dec_tokens=torch.randint(0, 256, dec_seg.shape, generator=generator),
        enc_positions=enc_pos, dec_positions=dec_pos,
        enc_segment_ids=enc_seg, dec_segment_ids=dec_seg,
    )  # fmt: skip
    inputs = {k: v.cuda() for k, v in inputs.items()}
    loss_mask = inputs["dec_segment_ids"] > 0
    check_forward_and_grads(model, reference, inputs, shifted(inputs["dec_tokens"]), loss_mask)
