"""Packing examples into fixed-length rows and batches of tensors.

Several examples share a row; each gets its own segment number (1, 2, ... within the row;
padding is 0) and positions that restart at 0, so the model can keep attention inside a
segment and RoPE sees every example from position 0. Packing is greedy: an example joins the
current row if it fits, otherwise the row is closed (padded) and a new one begins. An example
never spans two rows. A final partial batch is filled with empty (all-padding) rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

from causeway.data_pipeline.packing.arrays import Batch

from .examples import Example, Seq2SeqExample

T = TypeVar("T")


def greedy_rows(
    examples: Iterable[T],
    capacity: tuple[int, ...],
    sizes: Callable[[T], tuple[int, ...]],
    max_segments: int | None = None,
) -> Iterator[list[T]]:
    """Group examples into rows: every size component must fit its capacity jointly
    (one component for decoders; encoder and decoder lengths for encoder-decoders)."""
    row: list[T] = []
    used = [0] * len(capacity)
    for example in examples:
        size = sizes(example)
        if any(s > c for s, c in zip(size, capacity, strict=True)):
            raise ValueError(f"example of size {size} does not fit a row of size {capacity}")
        full = max_segments is not None and len(row) >= max_segments
        if full or any(u + s > c for u, s, c in zip(used, size, capacity, strict=True)):
            yield row
            row, used = [], [0] * len(capacity)
        row.append(example)
        used = [u + s for u, s in zip(used, size, strict=True)]
    if row:
        yield row


def batched(rows: Iterable[list[T]], batch_size: int) -> Iterator[list[list[T]]]:
    """Groups of `batch_size` rows; the last group is topped up with empty rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    group: list[list[T]] = []
    for row in rows:
        group.append(row)
        if len(group) == batch_size:
            yield group
            group = []
    if group:
        yield group + [[] for _ in range(batch_size - len(group))]


def segments_and_positions(lengths: Sequence[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids (1-based, padding 0) and per-segment positions for a row of `width`."""
    segment_ids = np.zeros(width, dtype=np.int32)
    positions = np.zeros(width, dtype=np.int64)
    start = 0
    for number, length in enumerate(lengths, start=1):
        segment_ids[start : start + length] = number
        positions[start : start + length] = np.arange(length)
        start += length
    return segment_ids, positions


def _filled(parts: Sequence[Sequence], width: int, fill, dtype) -> np.ndarray:
    """Concatenate the parts and pad them with `fill` up to `width`."""
    row = np.full(width, fill, dtype=dtype)
    flat = [x for part in parts for x in part]
    row[: len(flat)] = flat
    return row


def decoder_row(row: Sequence[Example], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """numpy arrays of one packed decoder row (prefix lengths indexed by segment number)."""
    segment_ids, positions = segments_and_positions([len(ex) for ex in row], seq_len)
    return {
        "tokens": _filled([ex.tokens for ex in row], seq_len, pad_id, np.int64),
        "targets": _filled([ex.targets for ex in row], seq_len, pad_id, np.int64),
        "loss_mask": _filled([ex.loss_mask for ex in row], seq_len, False, bool),
        "segment_ids": segment_ids,
        "positions": positions,
        "prefix_lengths": np.array([0] + [ex.prefix_length for ex in row], dtype=np.int64),
    }


def pack_decoder(
    examples: Iterable[Example],
    seq_len: int,
    batch_size: int,
    pad_id: int,
    max_segments: int | None = None,
) -> Iterator[Batch]:
    """Batches of packed decoder rows: tokens, targets, loss_mask, segment_ids, positions
    ([batch_size, seq_len]) and prefix_lengths ([batch_size, segments + 1], entry k for
    segment k, entry 0 = 0). The prefix_lengths width is the most segments of any row in the
    batch, or `max_segments` + 1 when given (which also caps segments per row, for a fixed
    shape)."""

    def size(example: Example) -> tuple[int]:
        if len(example) == 0:
            raise ValueError("cannot pack an empty example")
        return (len(example),)

    rows = greedy_rows(examples, (seq_len,), size, max_segments)
    for group in batched(rows, batch_size):
        arrays = [decoder_row(row, seq_len, pad_id) for row in group]
        width = max_segments + 1 if max_segments else max(len(a["prefix_lengths"]) for a in arrays)
        for a in arrays:
            a["prefix_lengths"] = np.pad(a["prefix_lengths"], (0, width - len(a["prefix_lengths"])))
        yield _stack(arrays)


def seq2seq_row(
    row: Sequence[Seq2SeqExample],
    inputs_length: int,
    targets_length: int,
    pad_id: int,
    decoder_start_id: int,
) -> dict[str, np.ndarray]:
    """numpy arrays of one packed encoder-decoder row; example k is segment k on both sides."""
    enc_segments, enc_positions = segments_and_positions(
        [len(ex.inputs) for ex in row], inputs_length
    )
    dec_segments, dec_positions = segments_and_positions(
        [len(ex.targets) for ex in row], targets_length
    )
    shifted = [[decoder_start_id] + ex.targets[:-1] for ex in row]
    return {
        "enc_tokens": _filled([ex.inputs for ex in row], inputs_length, pad_id, np.int64),
        "enc_segment_ids": enc_segments,
        "enc_positions": enc_positions,
        "dec_tokens": _filled(shifted, targets_length, pad_id, np.int64),
        "targets": _filled([ex.targets for ex in row], targets_length, pad_id, np.int64),
        "loss_mask": dec_segments > 0,
        "dec_segment_ids": dec_segments,
        "dec_positions": dec_positions,
    }


def pack_seq2seq(
    examples: Iterable[Seq2SeqExample],
    inputs_length: int,
    targets_length: int,
    batch_size: int,
    pad_id: int,
    decoder_start_id: int,
) -> Iterator[Batch]:
    """Batches of packed encoder-decoder rows. An example joins a row only if its inputs fit
    the encoder side and its targets the decoder side; the decoder reads its targets shifted
    right, starting with `decoder_start_id`, restarting at every example."""

    def size(example: Seq2SeqExample) -> tuple[int, int]:
        if not example.targets:
            raise ValueError("cannot pack an example without targets")
        return (len(example.inputs), len(example.targets))

    rows = greedy_rows(examples, (inputs_length, targets_length), size)
    for group in batched(rows, batch_size):
        yield _stack(
            [seq2seq_row(r, inputs_length, targets_length, pad_id, decoder_start_id) for r in group]
        )


def _stack(arrays: list[dict[str, np.ndarray]]) -> Batch:
    return {key: torch.from_numpy(np.stack([a[key] for a in arrays])) for key in arrays[0]}
