"""The vectorised packer: in order it gives exactly the batches of the reference packer
(tests/data_pipeline/reference/packing.py); split and best-fit packing keep every example."""

from __future__ import annotations

import pytest
import torch

from causeway.data_pipeline.objectives.objectives import make_block_objective
from causeway.data_pipeline.packing.arrays import decoder_batch, seq2seq_batch, to_torch
from causeway.data_pipeline.packing.rows import RowPacker, best_fit_rows
from causeway.data_pipeline.tokenizer import Tokenizer

from .reference.packing import pack_decoder, pack_seq2seq
from .test_block_objectives import block, decoder_examples, random_docs, seq2seq_examples

PAD, START = 0, 3


def packed(blocks, batch_size: int, capacity: tuple[int, ...], finish, max_segments=None):
    packer, batches = RowPacker(batch_size, capacity, max_segments), []
    for ex in blocks:
        sizes = [ex.lengths.tolist()] if ex.inputs is None else [
            ex.input_lengths.tolist(), ex.target_lengths.tolist()]  # fmt: skip
        start = 0
        while start < len(ex):
            start, _ = packer.place(ex, sizes, start, len(ex))
            if packer.full:
                batches.append(to_torch(finish(packer.take_placements())))
    if not packer.empty:
        batches.append(to_torch(finish(packer.take_placements())))
    return batches


def assert_same(ours: list[dict], reference: list[dict]) -> None:
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(("objective", "max_segments"), [("prefix_lm", None), ("full_lm", 3)])
def test_decoder_batches_equal_the_reference(
    tokenizer: Tokenizer, objective: str, max_segments: int | None
) -> None:
    seq_len, batch_size = 48, 3
    make = make_block_objective(objective, "decoder", tokenizer, seq_len)
    blocks = [make(block(random_docs(50, seed=s), shard=s), seed=0) for s in range(3)]
    examples = [e for b in blocks for e in decoder_examples(b)]
    ours = packed(blocks, batch_size, (seq_len,), lambda parts: decoder_batch(
        parts, batch_size, seq_len, PAD, max_segments), max_segments)  # fmt: skip
    assert_same(ours, list(pack_decoder(examples, seq_len, batch_size, PAD, max_segments)))


def test_seq2seq_batches_equal_the_reference(tokenizer: Tokenizer) -> None:
    make = make_block_objective("span_corruption", "encoder_decoder", tokenizer, 64)
    blocks = [make(block(random_docs(40, seed=s), shard=s), seed=0) for s in range(3)]
    examples = [e for b in blocks for e in seq2seq_examples(b)]
    lengths = (make.inputs_length, make.targets_length)
    ours = packed(blocks, 4, lengths, lambda parts: seq2seq_batch(parts, 4, *lengths, PAD, START))
    assert_same(ours, list(pack_seq2seq(examples, *lengths, 4, PAD, START)))


def test_example_longer_than_a_row_is_an_error(tokenizer: Tokenizer) -> None:
    make = make_block_objective("full_lm", "decoder", tokenizer, 64)
    with pytest.raises(ValueError, match="does not fit"):
        packed([make(block(random_docs(5, seed=0)), seed=0)], 2, (16,), lambda p: {})


def test_split_packing_fills_every_row_and_keeps_every_position_once(tokenizer: Tokenizer) -> None:
    """full_lm with split=True: all rows full but the very last; each example's positions
    appear once, in order, its rest opening the next row as a segment of its own."""
    seq_len, rows = 48, 3
    make = make_block_objective("full_lm", "decoder", tokenizer, seq_len)
    ex = make(block(random_docs(60, seed=1)), seed=0)
    packer, batches = RowPacker(rows, (seq_len,), None, split=True), []
    start, skip = 0, 0
    while start < len(ex):
        start, skip = packer.place(ex, [ex.lengths.tolist()], start, len(ex), skip)
        if packer.full:
            batches.append(
                to_torch(decoder_batch(packer.take_placements(), rows, seq_len, PAD, None))
            )
    batches.append(to_torch(decoder_batch(packer.take_placements(), rows, seq_len, PAD, None)))
    filled = [b["segment_ids"] > 0 for b in batches]
    assert all(f.all() for f in filled[:-1]) and len(batches) > 3
    placed = [b["targets"][f] for b, f in zip(batches, filled, strict=True)]
    assert torch.equal(torch.cat(placed), torch.from_numpy(ex.targets))
    starts = [b["positions"] == 0 for b in batches]  # every segment restarts its positions
    assert all(s[f[:, 0], 0].all() for s, f in zip(starts, filled, strict=True))


def test_best_fit_places_every_example_once_within_the_row(tokenizer: Tokenizer) -> None:
    make = make_block_objective("span_corruption", "encoder_decoder", tokenizer, 64)
    ex = make(block(random_docs(80, seed=2)), seed=0)
    capacity = (make.inputs_length, make.targets_length)
    rows = best_fit_rows([(ex, i) for i in range(len(ex))], capacity, 4)
    placed = sorted(i for row in rows for _, i, _ in row)
    assert placed == list(range(len(ex)))
    for row in rows:
        assert len(row) <= 4
        for side, cap in enumerate(capacity):
            sizes = ex.input_lengths if side == 0 else ex.target_lengths
            assert sum(int(sizes[i]) for _, i, _ in row) <= cap
    next_fit, used = 1, [0, 0]
    for i in range(len(ex)):
        size = [int(ex.input_lengths[i]), int(ex.target_lengths[i])]
        if any(u + s > c for u, s, c in zip(used, size, capacity, strict=True)):
            next_fit, used = next_fit + 1, [0, 0]
        used = [u + s for u, s in zip(used, size, strict=True)]
    assert len(rows) < next_fit
