from __future__ import annotations

import numpy as np
import pytest
import torch

from .reference.objectives import (
    Example,
    Seq2SeqExample,
    decoder_example,
    full_lm,
)
from .reference.packing import pack_decoder, pack_seq2seq

PAD = 0
START = 3


def _random_examples(n: int, seed: int, max_len: int) -> list[Example]:
    """Mixed full-LM and prefix examples with distinctive token values (never PAD)."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        length = int(rng.integers(2, max_len + 2))
        doc = rng.integers(10, 1000, size=length)
        if i % 2:
            examples.append(full_lm(doc))
        else:
            split = int(rng.integers(1, length))
            examples.append(decoder_example(doc[:split], doc[split:]))
    return examples


def _rows(batches: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    return [
        {key: value[r].numpy() for key, value in batch.items()}
        for batch in batches
        for r in range(len(next(iter(batch.values()))))
    ]


def test_decoder_packing_invariants() -> None:
    seq_len, batch_size = 32, 4
    examples = _random_examples(200, seed=0, max_len=seq_len)
    batches = list(pack_decoder(examples, seq_len, batch_size, PAD))
    for batch in batches:
        assert batch["tokens"].dtype == torch.int64 and batch["targets"].dtype == torch.int64
        assert batch["loss_mask"].dtype == torch.bool
        assert batch["segment_ids"].dtype == torch.int32
        assert batch["positions"].dtype == torch.int64
        for key in ("tokens", "targets", "loss_mask", "segment_ids", "positions"):
            assert batch[key].shape == (batch_size, seq_len)
        most_segments = int(batch["segment_ids"].max())
        assert batch["prefix_lengths"].shape == (batch_size, most_segments + 1)

    unpacked = []
    rows = _rows(batches)
    for row in rows:
        seg = row["segment_ids"]
        used = int((seg > 0).sum())
        assert (seg[:used] > 0).all() and (seg[used:] == 0).all()  # padding only at the end
        assert (np.diff(seg[:used]) >= 0).all() and (np.diff(seg[:used]) <= 1).all()
        assert not row["loss_mask"][used:].any()  # never a loss on padding
        assert (row["tokens"][used:] == PAD).all() and (row["positions"][used:] == 0).all()
        assert row["prefix_lengths"][0] == 0
        for k in range(1, int(seg.max(initial=0)) + 1):
            where = seg == k
            assert (row["positions"][where] == np.arange(where.sum())).all()
            unpacked.append(
                Example(
                    row["tokens"][where].tolist(),
                    row["targets"][where].tolist(),
                    row["loss_mask"][where].tolist(),
                    int(row["prefix_lengths"][k]),
                )
            )
    assert unpacked == examples  # every example whole, in order, within one row


def test_rows_are_closed_only_when_the_next_example_does_not_fit() -> None:
    seq_len = 32
    examples = _random_examples(100, seed=1, max_len=seq_len)
    rows = _rows(list(pack_decoder(examples, seq_len, 1, PAD)))
    consumed = 0
    for row in rows[:-1]:
        count = int(row["segment_ids"].max())
        consumed += count
        free = seq_len - int((row["segment_ids"] > 0).sum())
        assert len(examples[consumed]) > free


def test_final_partial_batch_is_topped_up_with_empty_rows() -> None:
    examples = [full_lm(list(range(10, 30)))] * 3  # 19 tokens each: one per row of 32
    batches = list(pack_decoder(examples, 32, 2, PAD))
    assert len(batches) == 2
    assert batches[1]["segment_ids"][1].eq(0).all()
    assert not batches[1]["loss_mask"][1].any()


def test_max_segments_fixes_the_prefix_lengths_width() -> None:
    examples = [full_lm([10, 11, 12])] * 10  # 2 tokens each
    batches = list(pack_decoder(examples, 32, 2, PAD, max_segments=4))
    assert all(b["prefix_lengths"].shape == (2, 5) for b in batches)
    assert all(int(b["segment_ids"].max()) <= 4 for b in batches)
    assert sum(int(b["segment_ids"].amax(dim=1).sum()) for b in batches) == 10


def test_prefix_lengths_are_indexed_by_segment() -> None:
    examples = [decoder_example([10, 11], [12, 13]), decoder_example([14], [15, 16, 17])]
    (batch,) = pack_decoder(examples, 16, 1, PAD)
    assert batch["prefix_lengths"].tolist() == [[0, 2, 1]]
    assert batch["segment_ids"][0, :7].tolist() == [1, 1, 1, 2, 2, 2, 0]
    assert batch["positions"][0, :7].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert batch["loss_mask"][0, :7].tolist() == [False, True, True, True, True, True, False]


def test_too_long_example_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        list(pack_decoder([full_lm(list(range(40)))], 32, 1, PAD))


def _seq2seq_examples(n: int, seed: int) -> list[Seq2SeqExample]:
    rng = np.random.default_rng(seed)
    return [
        Seq2SeqExample(
            rng.integers(10, 1000, size=int(rng.integers(1, 40))).tolist(),
            rng.integers(10, 1000, size=int(rng.integers(1, 12))).tolist(),
        )
        for _ in range(n)
    ]


def test_seq2seq_packing_aligns_encoder_and_decoder_segments() -> None:
    inputs_length, targets_length, batch_size = 48, 16, 3
    examples = _seq2seq_examples(150, seed=2)
    batches = list(pack_seq2seq(examples, inputs_length, targets_length, batch_size, PAD, START))
    for batch in batches:
        for key in ("enc_tokens", "enc_segment_ids", "enc_positions"):
            assert batch[key].shape == (batch_size, inputs_length)
        for key in ("dec_tokens", "targets", "loss_mask", "dec_segment_ids", "dec_positions"):
            assert batch[key].shape == (batch_size, targets_length)
    unpacked = []
    for row in _rows(batches):
        enc_seg, dec_seg = row["enc_segment_ids"], row["dec_segment_ids"]
        assert set(np.unique(enc_seg)) - {0} == set(np.unique(dec_seg)) - {0}
        assert (row["loss_mask"] == (dec_seg > 0)).all()
        for k in range(1, int(dec_seg.max(initial=0)) + 1):
            enc, dec = enc_seg == k, dec_seg == k
            targets = row["targets"][dec].tolist()
            assert row["dec_tokens"][dec].tolist() == [START] + targets[:-1]
            assert (row["enc_positions"][enc] == np.arange(enc.sum())).all()
            assert (row["dec_positions"][dec] == np.arange(dec.sum())).all()
            unpacked.append(Seq2SeqExample(row["enc_tokens"][enc].tolist(), targets))
    assert unpacked == examples


def test_seq2seq_row_closes_when_either_side_is_full() -> None:
    examples = [Seq2SeqExample([10] * 2, [20] * 10), Seq2SeqExample([11] * 2, [21] * 10)]
    (batch,) = pack_seq2seq(examples, 48, 16, 2, PAD, START)  # decoder side is the limit
    assert batch["enc_segment_ids"].amax(dim=1).tolist() == [1, 1]
    examples = [Seq2SeqExample([10] * 30, [20]), Seq2SeqExample([11] * 30, [21])]
    (batch,) = pack_seq2seq(examples, 48, 16, 2, PAD, START)  # encoder side is the limit
    assert batch["dec_segment_ids"].amax(dim=1).tolist() == [1, 1]


def test_seq2seq_too_long_example_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        list(pack_seq2seq([Seq2SeqExample([1], [2] * 17)], 48, 16, 1, PAD, START))
