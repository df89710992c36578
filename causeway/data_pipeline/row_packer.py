"""Greedy packing of example blocks into batches of rows, with numpy writing the rows.

The rule is `packing.py`'s: an example joins the current row if it fits (and the row has fewer
than `max_segments` segments), otherwise the row is closed and a new one begins; an example
never spans two rows. Deciding where each example goes is a short Python loop over example
lengths; copying tokens is done once per batch and block with fancy indexing. A batch is
complete when an example does not fit its last row: that example is left *pending* and becomes
the first of the next batch, so that between batches no example is half-placed (which is what
makes the stream's state a plain cursor).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from causeway.data_pipeline.block_examples import Examples
from causeway.data_pipeline.block_ops import ranges

Batch = dict[str, torch.Tensor]
_NO_LIMIT = 1 << 62


class Placement(NamedTuple):
    """examples[start:stop] placed in `rows`, at `offsets[side]` within them; `numbers` are
    their segment numbers within their rows (1, 2, ...)."""

    examples: Examples
    start: int
    stop: int
    rows: list[int]
    offsets: list[list[int]]
    numbers: list[int]

    def filled(self) -> int:
        """Positions these examples fill (both sides for encoder-decoder examples)."""
        ex, a, b = self.examples, self.start, self.stop
        sides = [ex.lengths] if ex.inputs is None else [ex.input_lengths, ex.target_lengths]
        return sum(int(side[a:b].sum()) for side in sides)

    def shifted(self, first_row: int) -> Placement:
        """The same placement with its rows moved down by `first_row`."""
        return self._replace(rows=[r + first_row for r in self.rows])


class RowPacker:
    """Places examples row by row; `place` stops when the batch is full."""

    def __init__(
        self, batch_size: int, capacity: tuple[int, ...], max_segments: int | None
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.capacity = capacity
        self.max_segments = max_segments or _NO_LIMIT
        self.row = 0
        self.used = [0] * len(capacity)
        self.segments = 0
        self.parts: list[Placement] = []

    @property
    def full(self) -> bool:
        return self.row >= self.batch_size

    @property
    def empty(self) -> bool:
        return not self.parts

    def place(self, examples: Examples, sizes: list[list[int]], start: int, stop: int) -> int:
        """Place examples[start:stop] (sizes[k][i]: size of example i on side k); returns the
        index of the first example not placed (== stop unless the batch filled up)."""
        rows: list[int] = []
        offsets: list[list[int]] = [[] for _ in self.capacity]
        numbers: list[int] = []
        row, used, segments = self.row, self.used, self.segments
        capacity, limit, batch = self.capacity, self.max_segments, self.batch_size
        i = start
        single = len(capacity) == 1
        while i < stop:
            if single:
                size = sizes[0][i]
                fits = used[0] + size <= capacity[0]
            else:
                fits = all(u + s[i] <= c for u, s, c in zip(used, sizes, capacity, strict=True))
            if not fits or segments >= limit:
                if segments == 0:
                    raise ValueError(f"example of size {[s[i] for s in sizes]} does not fit a "
                                     f"row of size {capacity}")  # fmt: skip
                row, used, segments = row + 1, [0] * len(capacity), 0
                if row == batch:
                    break
            rows.append(row)
            segments += 1
            numbers.append(segments)
            for k, s in enumerate(sizes):
                offsets[k].append(used[k])
                used[k] += s[i]
            i += 1
        if i > start:
            self.parts.append(Placement(examples, start, i, rows, offsets, numbers))
        self.row, self.used, self.segments = row, used, segments
        return i

    def take_placements(self) -> list[Placement]:
        """The placements of the batch, and a fresh start for the next one."""
        parts = self.parts
        self.parts, self.row, self.used, self.segments = [], 0, [0] * len(self.capacity), 0
        return parts


def _scatter_runs(
    width: int, rows: np.ndarray, offs: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flat destination indices of runs placed at (row, offset); also their run starts."""
    starts = rows * width + offs
    return ranges(starts, lengths), starts


def decoder_batch(
    parts: list, batch_size: int, seq_len: int, pad_id: int, max_segments: int | None
) -> dict[str, np.ndarray]:
    """The numpy arrays of a decoder batch (see `packing.pack_decoder` for the layout)."""
    shape = (batch_size, seq_len)
    tokens = np.full(shape, pad_id, dtype=np.int64)
    targets = np.full(shape, pad_id, dtype=np.int64)
    loss_mask = np.zeros(shape, dtype=bool)
    segment_ids = np.zeros(shape, dtype=np.int32)
    positions = np.zeros(shape, dtype=np.int64)
    most = max((max(numbers) for *_, numbers in parts), default=0)
    prefix = np.zeros((batch_size, (max_segments or most) + 1), dtype=np.int64)
    for ex, a, b, rows, offs, numbers in parts:
        rows, numbers = np.asarray(rows), np.asarray(numbers)
        lengths = ex.lengths[a:b]
        dest, starts = _scatter_runs(seq_len, rows, np.asarray(offs[0]), lengths)
        first = int(ex.starts()[a])
        source = slice(first, first + dest.size)
        tokens.reshape(-1)[dest] = ex.tokens[source]
        targets.reshape(-1)[dest] = ex.targets[source]
        loss_mask.reshape(-1)[dest] = ex.loss_mask[source]
        segment_ids.reshape(-1)[dest] = np.repeat(numbers, lengths)
        positions.reshape(-1)[dest] = dest - np.repeat(starts, lengths)
        prefix[rows, numbers] = ex.prefix[a:b]
    return {
        "tokens": tokens,
        "targets": targets,
        "loss_mask": loss_mask,
        "segment_ids": segment_ids,
        "positions": positions,
        "prefix_lengths": prefix,
    }


def seq2seq_batch(
    parts: list, batch_size: int, inputs_length: int, targets_length: int, pad_id: int,
    decoder_start_id: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The numpy arrays of an encoder-decoder batch (see `packing.pack_seq2seq`)."""
    enc_tokens = np.full((batch_size, inputs_length), pad_id, dtype=np.int64)
    enc_segments = np.zeros((batch_size, inputs_length), dtype=np.int32)
    enc_positions = np.zeros((batch_size, inputs_length), dtype=np.int64)
    dec_tokens = np.full((batch_size, targets_length), pad_id, dtype=np.int64)
    targets = np.full((batch_size, targets_length), pad_id, dtype=np.int64)
    dec_segments = np.zeros((batch_size, targets_length), dtype=np.int32)
    dec_positions = np.zeros((batch_size, targets_length), dtype=np.int64)
    for ex, a, b, rows, offs, numbers in parts:
        rows, numbers = np.asarray(rows), np.asarray(numbers)
        for side, (lengths, flat, width) in enumerate(
            ((ex.input_lengths[a:b], ex.inputs, inputs_length),
             (ex.target_lengths[a:b], ex.targets, targets_length))
        ):  # fmt: skip
            dest, starts = _scatter_runs(width, rows, np.asarray(offs[side]), lengths)
            first = int(ex.starts(side)[a])
            values = flat[first : first + dest.size]
            segments, positions = (enc_segments, enc_positions) if side == 0 else (
                dec_segments, dec_positions)  # fmt: skip
            segments.reshape(-1)[dest] = np.repeat(numbers, lengths)
            positions.reshape(-1)[dest] = dest - np.repeat(starts, lengths)
            if side == 0:
                enc_tokens.reshape(-1)[dest] = values
            else:
                targets.reshape(-1)[dest] = values
                shifted = np.empty_like(values)
                shifted[1:] = values[:-1]
                shifted[np.cumsum(lengths) - lengths] = decoder_start_id
                dec_tokens.reshape(-1)[dest] = shifted
    return {
        "enc_tokens": enc_tokens,
        "enc_segment_ids": enc_segments,
        "enc_positions": enc_positions,
        "dec_tokens": dec_tokens,
        "targets": targets,
        "loss_mask": dec_segments > 0,
        "dec_segment_ids": dec_segments,
        "dec_positions": dec_positions,
    }


def to_torch(arrays: dict[str, np.ndarray]) -> Batch:
    return {key: torch.from_numpy(value) for key, value in arrays.items()}
