"""The numpy arrays of packed rows: one call per batch and block, fancy indexing only.

`decoder_batch` and `seq2seq_batch` write the placements (`rows.Placement`) of a batch into
fixed-shape arrays; `to_torch` wraps them without copying.
"""

from __future__ import annotations

import numpy as np
import torch

from causeway.data_pipeline.objectives.ops import ranges
from causeway.data_pipeline.packing.rows import Placement

Batch = dict[str, torch.Tensor]


def _scatter_runs(
    width: int, rows: np.ndarray, offs: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flat destination indices of runs placed at (row, offset); also their run starts."""
    starts = rows * width + offs
    return ranges(starts, lengths), starts


def decoder_batch(
    parts: list[Placement], batch_size: int, seq_len: int, pad_id: int,
    max_segments: int | None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The numpy arrays of a decoder batch: tokens, targets, loss_mask, segment_ids (1, 2, ...
    per row; 0 is padding), positions (from 0 in each segment) and prefix_lengths
    [rows, segments + 1] (the visible prefix of each segment)."""
    shape = (batch_size, seq_len)
    tokens = np.full(shape, pad_id, dtype=np.int64)
    targets = np.full(shape, pad_id, dtype=np.int64)
    loss_mask = np.zeros(shape, dtype=bool)
    segment_ids = np.zeros(shape, dtype=np.int32)
    positions = np.zeros(shape, dtype=np.int64)
    most = max((int(p.numbers.max()) for p in parts if len(p.numbers)), default=0)
    prefix = np.zeros((batch_size, (max_segments or most) + 1), dtype=np.int64)
    for p in parts:
        ex, lengths = p.examples, p.lengths[0]
        dest, starts = _scatter_runs(seq_len, p.rows, p.offsets[0], lengths)
        source = p.sources(0)
        tokens.reshape(-1)[dest] = ex.tokens[source]
        targets.reshape(-1)[dest] = ex.targets[source]
        loss_mask.reshape(-1)[dest] = ex.loss_mask[source]
        segment_ids.reshape(-1)[dest] = np.repeat(p.numbers, lengths)
        positions.reshape(-1)[dest] = dest - np.repeat(starts, lengths)
        visible = ex.prefix[p.index].copy()
        visible[0] -= p.skip
        prefix[p.rows, p.numbers] = np.clip(visible, 0, lengths)
    return {
        "tokens": tokens,
        "targets": targets,
        "loss_mask": loss_mask,
        "segment_ids": segment_ids,
        "positions": positions,
        "prefix_lengths": prefix,
    }


def seq2seq_batch(
    parts: list[Placement], batch_size: int, inputs_length: int, targets_length: int,
    pad_id: int, decoder_start_id: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The numpy arrays of an encoder-decoder batch: enc_tokens/segment ids/positions,
    dec_tokens (targets shifted right, `decoder_start_id` first), targets, loss_mask and the
    decoder's segment ids and positions."""
    enc_tokens = np.full((batch_size, inputs_length), pad_id, dtype=np.int64)
    enc_segments = np.zeros((batch_size, inputs_length), dtype=np.int32)
    enc_positions = np.zeros((batch_size, inputs_length), dtype=np.int64)
    dec_tokens = np.full((batch_size, targets_length), pad_id, dtype=np.int64)
    targets = np.full((batch_size, targets_length), pad_id, dtype=np.int64)
    dec_segments = np.zeros((batch_size, targets_length), dtype=np.int32)
    dec_positions = np.zeros((batch_size, targets_length), dtype=np.int64)
    for p in parts:
        ex = p.examples
        for side, (flat, width) in enumerate(((ex.inputs, inputs_length),
                                              (ex.targets, targets_length))):  # fmt: skip
            lengths = p.lengths[side]
            dest, starts = _scatter_runs(width, p.rows, p.offsets[side], lengths)
            values = flat[p.sources(side)]
            segments, positions = (enc_segments, enc_positions) if side == 0 else (
                dec_segments, dec_positions)  # fmt: skip
            segments.reshape(-1)[dest] = np.repeat(p.numbers, lengths)
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
