"""Gradient leakage: the loss at one position must not depend on any token it may not see.

The input embeddings are made leaf tensors (a forward hook on `embed` swaps in a detached
copy that requires grad), the loss is a cross-entropy at a single position t, and the
gradient w.r.t. every position s must be exactly 0 when s is invisible to t. With >= 2
layers, indirect flow through intermediate positions is covered as well; the visibility
rule is transitive, so "reachable through the layers" equals "visible".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .reference import (
    SELF_KINDS,
    WIDTH,
    packed_decoder_batch,
    packed_seq2seq_batch,
    reference_mask,
    tiny_model,
)


class LeafEmbeddings:
    """Each call of `module` returns a fresh leaf tensor that requires grad; kept in order."""

    def __init__(self, module: torch.nn.Module):
        self.outputs: list[torch.Tensor] = []
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, module, args, output):
        leaf = output.detach().requires_grad_(True)
        self.outputs.append(leaf)
        return leaf


def loss_at(logits: torch.Tensor, b: int, t: int) -> torch.Tensor:
    return F.cross_entropy(logits[b, t][None], torch.tensor([3]))


def gradient_rows(logits, leaves, b, t):
    grads = torch.autograd.grad(loss_at(logits, b, t), leaves, retain_graph=True)
    # Per-position "did anything flow": exact zero test on the whole embedding vector.
    return [g[b].abs().amax(-1) for g in grads], grads


@pytest.mark.parametrize("kind", SELF_KINDS)
def test_decoder_gradient_never_reaches_invisible_positions(kind):
    # sdpa: FlexAttention has no backward on CPU; flash is checked on GPU in test_flash.py.
    model = tiny_model(visibility=kind, n_layers=3, n_kv_heads=2, attention="sdpa")
    segment_ids, positions, prefix_lengths = packed_decoder_batch()
    batch = segment_ids.shape[0]
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, model.cfg.vocab_size, segment_ids.shape, generator=generator)
    leaf = LeafEmbeddings(model.embed)
    logits = model(tokens, positions, segment_ids, prefix_lengths)
    (embeddings,) = leaf.outputs
    visible = reference_mask(
        kind, batch, WIDTH, WIDTH, segment_ids, segment_ids, positions, prefix_lengths
    )
    for b in range(batch):
        for t in range(WIDTH):
            (flow,), (grad,) = gradient_rows(logits, [embeddings], b, t)
            invisible = ~visible[b, t]
            assert torch.all(flow[invisible] == 0), (
                f"{kind}: position {t} of row {b} receives gradient from invisible "
                f"positions {invisible.nonzero().flatten().tolist()}"
            )
            # Other rows of the batch never get anything either.
            others = torch.cat([grad[:b], grad[b + 1 :]])
            assert torch.all(others == 0)
            # The test can fail: everything visible does receive gradient.
            assert torch.all(flow[visible[b, t]] != 0), f"{kind}: row {b} position {t}"


def test_invisible_sets_are_non_trivial():
    """Each visibility has invisible positions inside a document (except bidirectional)
    and across documents, so the zero checks above cover something."""
    segment_ids, positions, prefix_lengths = packed_decoder_batch()
    same_doc = segment_ids[:, :, None] == segment_ids[:, None, :]
    for kind in SELF_KINDS:
        visible = reference_mask(
            kind, 3, WIDTH, WIDTH, segment_ids, segment_ids, positions, prefix_lengths
        )
        assert (~visible & ~same_doc).any()
        if kind != "bidirectional":
            assert (~visible & same_doc).any()


def test_encoder_decoder_gradient_respects_documents_and_causality():
    model = tiny_model(
        arch="encoder_decoder", visibility="prefix", n_layers=2, n_encoder_layers=2, n_kv_heads=2
    )
    enc_seg, enc_pos, dec_seg, dec_pos = packed_seq2seq_batch()
    generator = torch.Generator().manual_seed(6)
    enc_tokens = torch.randint(0, model.cfg.vocab_size, enc_seg.shape, generator=generator)
    dec_tokens = torch.randint(0, model.cfg.vocab_size, dec_seg.shape, generator=generator)
    leaf = LeafEmbeddings(model.embed)
    logits = model(enc_tokens, dec_tokens, enc_pos, dec_pos, enc_seg, dec_seg)
    enc_emb, dec_emb = leaf.outputs  # encoder embeds first, then the decoder
    assert enc_emb.shape[1] == enc_seg.shape[1] and dec_emb.shape[1] == dec_seg.shape[1]
    batch, dec_len = dec_seg.shape
    checked = 0
    for b in range(batch):
        for t in range(dec_len):
            doc = int(dec_seg[b, t])
            if doc == 0:
                continue  # padding queries see all encoder keys; their loss is masked
            (enc_flow, dec_flow), _ = gradient_rows(logits, [enc_emb, dec_emb], b, t)
            same_dec = dec_seg[b] == doc
            earlier = torch.arange(dec_len) <= t
            dec_visible = same_dec & earlier
            assert torch.all(dec_flow[~dec_visible] == 0), f"decoder leak at row {b} t={t}"
            assert torch.all(dec_flow[dec_visible] != 0)
            enc_same = enc_seg[b] == doc
            assert torch.all(enc_flow[~enc_same] == 0), f"encoder leak at row {b} t={t}"
            assert torch.all(enc_flow[enc_same] != 0), "own-document encoder tokens must flow"
            checked += 1
    assert checked == int((dec_seg > 0).sum())
