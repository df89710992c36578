"""The attention backends against an attention written out in the test (explicit softmax
with the loop-built mask, GQA by repeating K/V heads), and against one another."""

from __future__ import annotations

import pytest
import torch

from causeway.models.attention import AttentionMask, resolve_backend
from causeway.models.masks import self_attention_spec

from .reference import (
    SELF_KINDS,
    WIDTH,
    assert_close,
    max_diff,
    packed_decoder_batch,
    packed_seq2seq_batch,
    reference_decoder,
    reference_mask,
    reference_seq2seq,
    tiny_model,
    unpacked_decoder_batch,
    with_backend,
)

CPU = torch.device("cpu")
KV_HEADS = {"mha": None, "gqa": 2, "mqa": 1}


def decoder_inputs(packed: bool, vocab: int, seed: int = 1):
    """tokens and the forward's packing kwargs for a packed or an unpacked batch."""
    if packed:
        segment_ids, positions, prefix_lengths = packed_decoder_batch()
    else:
        positions, prefix_lengths = unpacked_decoder_batch()
        segment_ids = None
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, positions.shape, generator=generator)
    kwargs = dict(positions=positions, segment_ids=segment_ids, prefix_lengths=prefix_lengths)
    return tokens, kwargs


def decoder_reference_mask(kind, tokens, kwargs):
    batch, width = tokens.shape
    seg = kwargs["segment_ids"]
    return reference_mask(
        kind, batch, width, width, seg, seg, kwargs["positions"], kwargs["prefix_lengths"]
    )


CASES = [(k, p, h) for k in SELF_KINDS for p in (True, False) for h in KV_HEADS]
IDS = [f"{k}-{'packed' if p else 'unpacked'}-{h}" for k, p, h in CASES]


@pytest.mark.parametrize(("kind", "packed", "heads"), CASES, ids=IDS)
def test_sdpa_decoder_matches_reference_attention(kind, packed, heads):
    model = tiny_model(visibility=kind, n_kv_heads=KV_HEADS[heads])
    tokens, kwargs = decoder_inputs(packed, model.cfg.vocab_size)
    logits = model(tokens, **kwargs)
    mask = decoder_reference_mask(kind, tokens, kwargs)
    expected = reference_decoder(model, tokens, mask, kwargs["positions"])
    assert_close(logits, expected)
    if kind != "causal" or packed:
        # The comparison can fail: the reference under the next-wider mask (causal -> more,
        # others -> causal) is far from the model's output.
        wrong = decoder_reference_mask("causal" if kind != "causal" else "prefix", tokens, kwargs)
        if not torch.equal(wrong, mask):
            other = reference_decoder(model, tokens, wrong, kwargs["positions"])
            assert max_diff(other, logits) > 1e-2


def test_reference_detects_cross_document_attention():
    """A reference that ignores segment ids disagrees with the packed model."""
    model = tiny_model(visibility="causal")
    tokens, kwargs = decoder_inputs(True, model.cfg.vocab_size)
    batch, width = tokens.shape
    unsegmented = reference_mask("causal", batch, width, width)
    leaky = reference_decoder(model, tokens, unsegmented, kwargs["positions"])
    assert max_diff(leaky, model(tokens, **kwargs)) > 1e-2


# FlexAttention runs through dynamo even in eager mode (~0.1 s a call on CPU): GQA for
# every visibility, MHA and MQA where the mask is richest.
FLEX_CASES = [(k, p, "gqa") for k in SELF_KINDS for p in (True, False)]
FLEX_CASES += [("prefix", True, "mha"), ("prefix", True, "mqa")]
FLEX_IDS = [f"{k}-{'packed' if p else 'unpacked'}-{h}" for k, p, h in FLEX_CASES]


@pytest.mark.parametrize(("kind", "packed", "heads"), FLEX_CASES, ids=FLEX_IDS)
def test_flex_matches_sdpa(kind, packed, heads):
    model = tiny_model(visibility=kind, n_kv_heads=KV_HEADS[heads])
    flex = with_backend(model, "flex")
    tokens, kwargs = decoder_inputs(packed, model.cfg.vocab_size)
    with torch.no_grad():  # FlexAttention on CPU is forward-only
        assert_close(flex(tokens, **kwargs), model(tokens, **kwargs))


def seq2seq_inputs(vocab: int, packed: bool, seed: int = 2):
    enc_seg, enc_pos, dec_seg, dec_pos = packed_seq2seq_batch()
    generator = torch.Generator().manual_seed(seed)
    enc_tokens = torch.randint(0, vocab, enc_seg.shape, generator=generator)
    dec_tokens = torch.randint(0, vocab, dec_seg.shape, generator=generator)
    if not packed:
        enc_seg = dec_seg = None
        enc_pos = torch.arange(enc_tokens.shape[1]).expand_as(enc_tokens)
        dec_pos = torch.arange(dec_tokens.shape[1]).expand_as(dec_tokens)
    return dict(
        enc_tokens=enc_tokens,
        dec_tokens=dec_tokens,
        enc_positions=enc_pos,
        dec_positions=dec_pos,
        enc_segment_ids=enc_seg,
        dec_segment_ids=dec_seg,
    )


def seq2seq_model(heads: str, backend: str = "sdpa"):
    return tiny_model(
        arch="encoder_decoder",
        visibility="prefix",
        n_kv_heads=KV_HEADS[heads],
        n_encoder_layers=3,
        attention=backend,
    )


ED_CASES = [(p, h) for p in (True, False) for h in ("mha", "gqa")]
ED_IDS = [f"{'packed' if p else 'unpacked'}-{h}" for p, h in ED_CASES]


@pytest.mark.parametrize(("packed", "heads"), ED_CASES, ids=ED_IDS)
def test_sdpa_encoder_decoder_matches_reference(packed, heads):
    model = seq2seq_model(heads)
    batch = seq2seq_inputs(model.cfg.vocab_size, packed)
    logits = model(**batch)
    expected = reference_seq2seq(
        model,
        batch["enc_tokens"],
        batch["dec_tokens"],
        batch["enc_positions"],
        batch["dec_positions"],
        batch["enc_segment_ids"],
        batch["dec_segment_ids"],
    )
    assert_close(logits, expected)


def test_encoder_decoder_reference_detects_cross_document_attention():
    model = seq2seq_model("mha")
    batch = seq2seq_inputs(model.cfg.vocab_size, packed=True)
    leaky = reference_seq2seq(
        model,
        batch["enc_tokens"],
        batch["dec_tokens"],
        batch["enc_positions"],
        batch["dec_positions"],
        batch["enc_segment_ids"],
        torch.ones_like(batch["dec_segment_ids"]),  # decoder tokens claim document 1
    )
    assert max_diff(leaky, model(**batch)) > 1e-2


@pytest.mark.parametrize(("packed", "heads"), ED_CASES, ids=ED_IDS)
def test_flex_encoder_decoder_matches_sdpa(packed, heads):
    model = seq2seq_model(heads)
    flex = with_backend(model, "flex")
    batch = seq2seq_inputs(model.cfg.vocab_size, packed)
    with torch.no_grad():
        assert_close(flex(**batch), model(**batch))


def test_auto_resolves_to_sdpa_on_cpu():
    assert resolve_backend("auto", CPU) == "sdpa"
    positions, _ = unpacked_decoder_batch()
    spec = self_attention_spec("causal", positions.shape[1], None, positions, None)
    assert AttentionMask(spec, "auto", CPU).backend == "sdpa"
    model = tiny_model(visibility="prefix")
    auto = with_backend(model, "auto")
    tokens, kwargs = decoder_inputs(True, model.cfg.vocab_size)
    assert torch.equal(auto(tokens, **kwargs), model(tokens, **kwargs))


def test_unknown_and_unavailable_backends_are_refused():
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("xformers", CPU)
    with pytest.raises(RuntimeError, match="flash"):
        resolve_backend("flash", CPU)


@pytest.mark.parametrize("heads", ["mha", "gqa"])
def test_sdpa_is_causal_fast_path_matches_masked_path(heads):
    model = tiny_model(visibility="causal", n_kv_heads=KV_HEADS[heads])
    tokens, kwargs = decoder_inputs(False, model.cfg.vocab_size)
    positions = kwargs["positions"]
    spec = self_attention_spec("causal", tokens.shape[1], None, positions, None)
    fast = AttentionMask(spec, "sdpa", CPU)
    assert spec.trivially_causal and fast.rendered() is None  # is_causal=True, no mask
    one_document = torch.ones_like(tokens, dtype=torch.int32)  # same visibility, masked path
    masked_spec = self_attention_spec("causal", tokens.shape[1], one_document, positions, None)
    assert AttentionMask(masked_spec, "sdpa", CPU).rendered() is not None
    fast_logits = model(tokens, positions=positions)
    masked_logits = model(tokens, positions=positions, segment_ids=one_document)
    assert_close(fast_logits, masked_logits)
    # and both equal the reference
    mask = reference_mask("causal", *tokens.shape, tokens.shape[1])
    assert_close(fast_logits, reference_decoder(model, tokens, mask, positions))


def test_masked_path_is_used_for_packed_rows():
    """With segment ids, sdpa gets a dense mask (not is_causal), rendered once and shared."""
    segment_ids, positions, _ = packed_decoder_batch()
    spec = self_attention_spec("causal", WIDTH, segment_ids, positions, None)
    mask = AttentionMask(spec, "sdpa", CPU)
    rendered = mask.rendered()
    assert rendered is not None and rendered.shape == (3, 1, WIDTH, WIDTH)
    assert mask.rendered() is rendered
