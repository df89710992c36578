"""`dense_mask` and the FlexAttention `mask_mod` against the visibility rule written as loops."""

from __future__ import annotations

import pytest
import torch

from causeway.models.masks import (
    MaskInputs,
    dense_mask,
    in_prefix,
    mask_mod_for,
    self_attention_spec,
)

from .reference import (
    PACKED_PREFIXES,
    PACKED_ROWS,
    SELF_KINDS,
    WIDTH,
    packed_decoder_batch,
    packed_seq2seq_batch,
    reference_mask,
    unpacked_decoder_batch,
)


def dense(spec: MaskInputs) -> torch.Tensor:
    """dense_mask as [B, Tq, Tk]; None (no mask) means everything is visible."""
    mask = dense_mask(spec, torch.device("cpu"))
    if mask is None:
        return torch.ones(spec.batch, spec.q_len, spec.k_len, dtype=torch.bool)
    assert mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[1] == 1
    return mask[:, 0].expand(spec.batch, spec.q_len, spec.k_len)


def flex_grid(spec: MaskInputs) -> torch.Tensor:
    """mask_mod evaluated on broadcast index grids, as [B, Tq, Tk]."""
    mod = mask_mod_for(spec)
    b = torch.arange(spec.batch)[:, None, None]
    q_idx = torch.arange(spec.q_len)[None, :, None]
    kv_idx = torch.arange(spec.k_len)[None, None, :]
    out = mod(b, torch.zeros((), dtype=torch.long), q_idx, kv_idx)
    return out.expand(spec.batch, spec.q_len, spec.k_len)


def flex_pointwise(spec: MaskInputs) -> torch.Tensor:
    """mask_mod called on one scalar index tuple at a time (as FlexAttention's vmap does)."""
    mod = mask_mod_for(spec)
    out = torch.zeros(spec.batch, spec.q_len, spec.k_len, dtype=torch.bool)
    for b in range(spec.batch):
        for t in range(spec.q_len):
            for s in range(spec.k_len):
                out[b, t, s] = bool(mod(torch.tensor(b), torch.tensor(0), torch.tensor(t),
                                        torch.tensor(s)))  # fmt: skip
    return out


def packed_spec(kind: str):
    segment_ids, positions, prefix_lengths = packed_decoder_batch()
    spec = self_attention_spec(kind, WIDTH, segment_ids, positions, prefix_lengths)
    expected = reference_mask(
        kind, len(PACKED_ROWS), WIDTH, WIDTH, segment_ids, segment_ids, positions, prefix_lengths
    )
    return spec, expected


def unpacked_spec(kind: str):
    positions, prefix_lengths = unpacked_decoder_batch()
    batch, width = positions.shape
    spec = self_attention_spec(kind, width, None, positions, prefix_lengths)
    expected = reference_mask(kind, batch, width, width, None, None, positions, prefix_lengths)
    return spec, expected


def cross_spec(packed: bool):
    enc_seg, _, dec_seg, _ = packed_seq2seq_batch()
    batch, dec_len = dec_seg.shape
    enc_len = enc_seg.shape[1]
    if not packed:
        enc_seg = dec_seg = None
    spec = MaskInputs("cross", batch, dec_len, enc_len, dec_seg, enc_seg)
    return spec, reference_mask("cross", batch, dec_len, enc_len, dec_seg, enc_seg)


CASES = [(kind, packed) for kind in SELF_KINDS for packed in (True, False)]


def spec_for(kind: str, packed: bool):
    if kind == "cross":
        return cross_spec(packed)
    return packed_spec(kind) if packed else unpacked_spec(kind)


ALL_CASES = CASES + [("cross", True), ("cross", False)]
IDS = [f"{k}-{'packed' if p else 'unpacked'}" for k, p in ALL_CASES]


@pytest.mark.parametrize(("kind", "packed"), ALL_CASES, ids=IDS)
def test_dense_mask_matches_loop_reference(kind, packed):
    spec, expected = spec_for(kind, packed)
    assert torch.equal(dense(spec), expected)


@pytest.mark.parametrize(("kind", "packed"), ALL_CASES, ids=IDS)
def test_flex_mask_mod_matches_loop_reference(kind, packed):
    spec, expected = spec_for(kind, packed)
    assert torch.equal(flex_grid(spec), expected)


@pytest.mark.parametrize("kind", ["causal", "prefix", "cross"])
def test_flex_mask_mod_pointwise_matches_loop_reference(kind):
    spec, expected = spec_for(kind, packed=True)
    assert torch.equal(flex_pointwise(spec), expected)


def test_reference_cases_are_not_degenerate():
    """The packed masks of the three visibilities differ from one another, so the
    comparisons above can tell them apart."""
    masks = {kind: packed_spec(kind)[1] for kind in SELF_KINDS}
    assert not torch.equal(masks["causal"], masks["prefix"])
    assert not torch.equal(masks["prefix"], masks["bidirectional"])
    # Documents never see one another: the mask is block-diagonal by segment.
    segment_ids, _, _ = packed_decoder_batch()
    other_doc = segment_ids[:, :, None] != segment_ids[:, None, :]
    assert not masks["bidirectional"][other_doc].any()


def test_in_prefix_flags_per_document():
    segment_ids, positions, prefix_lengths = packed_decoder_batch()
    flags = in_prefix(positions, segment_ids, prefix_lengths)
    expected = []
    for lengths, prefixes in zip(PACKED_ROWS, PACKED_PREFIXES, strict=True):
        row = []
        for length, prefix in zip(lengths, prefixes, strict=True):
            row += [i < prefix for i in range(length)]
        expected.append(row + [False] * (WIDTH - len(row)))
    assert flags.tolist() == expected


def test_prefix_zero_is_causal_and_whole_document_prefix_is_bidirectional():
    spec, mask = packed_spec("prefix")
    causal = packed_spec("causal")[1]
    bidirectional = packed_spec("bidirectional")[1]
    # Row 0: documents [5, 4, 3] with prefixes [2, 0, 3]; row 1: [7, 6] with [7, 1].
    doc2 = slice(5, 9)  # prefix 0
    assert torch.equal(mask[0, doc2, doc2], causal[0, doc2, doc2])
    doc3 = slice(9, 12)  # prefix = whole document
    assert torch.equal(mask[0, doc3, doc3], bidirectional[0, doc3, doc3])
    doc1 = slice(0, 7)
    assert mask[1, doc1, doc1].all()
    # A target token sees the whole prefix of its document but not later targets.
    assert mask[0, 2, 0:3].all() and not mask[0, 2, 3:5].any()
    # A prefix token sees the rest of the prefix, not the targets.
    assert mask[0, 0, 1] and not mask[0, 0, 2]


def test_padding_rules():
    spec, mask = packed_spec("causal")
    # Row 0 pads indices 12..15; padding keys are invisible to document queries.
    assert not mask[0, :12, 12:].any()
    cross, cross_mask = cross_spec(packed=True)
    dec_seg = cross.q_segments
    padding_queries = dec_seg == 0
    assert padding_queries.any()
    assert cross_mask[padding_queries].all()  # padding queries see every key of the row
    # Every query sees at least one key: no empty softmax row anywhere.
    for kind in SELF_KINDS:
        assert packed_spec(kind)[1].any(-1).all()
    assert cross_mask.any(-1).all()


def test_unmasked_and_trivially_causal_specs():
    positions, _ = unpacked_decoder_batch()
    causal = self_attention_spec("causal", positions.shape[1], None, positions, None)
    assert causal.trivially_causal and not causal.unmasked
    bidir = self_attention_spec("bidirectional", positions.shape[1], None, positions, None)
    assert bidir.unmasked and dense_mask(bidir, torch.device("cpu")) is None
    segment_ids, positions, _ = packed_decoder_batch()
    packed = self_attention_spec("causal", WIDTH, segment_ids, positions, None)
    assert not packed.trivially_causal and not packed.unmasked


def test_self_attention_spec_rejects_bad_inputs():
    positions, _ = unpacked_decoder_batch()
    with pytest.raises(ValueError, match="visibility"):
        self_attention_spec("sideways", positions.shape[1], None, positions, None)
    with pytest.raises(ValueError, match="prefix_lengths"):
        self_attention_spec("prefix", positions.shape[1], None, positions, None)
