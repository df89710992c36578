"""T5 span corruption for a whole block of chunks at once, in numpy.

Same rule as the per-document span corruption in tests/data_pipeline/reference/ (T5's
random_spans_noise_mask + noise_span_to_unique_sentinel, same noise/span counts and so the same
lengths), but the random segmentation of every chunk
is drawn together: each gap between items gets a hashed uniform key, a single argsort groups
the keys by chunk, and the k - 1 smallest keys of a chunk are its segment cuts — a uniformly
random choice of k - 1 gaps, exactly T5's shuffle. Randomness comes from the chunk keys
(`hash_random`), so a chunk is corrupted identically wherever and whenever it is read.
"""

from __future__ import annotations

import numpy as np

from causeway.data_pipeline.objectives.hash_random import combine, uniform
from causeway.data_pipeline.objectives.ops import offsets, run_ids, within

_NOISE_CUTS, _CLEAN_CUTS = 1, 2


def noise_counts_array(
    lengths: np.ndarray, density: float, mean_span: float
) -> tuple[np.ndarray, np.ndarray]:
    """`rules.noise_counts` for many lengths (numpy rounds half to even, like round)."""
    n = np.maximum(np.asarray(lengths, dtype=np.int64), 2)
    noise = np.clip(np.rint(n * density).astype(np.int64), 1, n - 1)
    spans = np.maximum(np.rint(noise / mean_span).astype(np.int64), 1)
    return noise, np.minimum(np.minimum(spans, noise), n - noise)


def random_segmentations(items: np.ndarray, segments: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For every run r, a uniformly random split of items[r] into segments[r] non-empty parts;
    the part lengths of all runs back to back (run order, then part order)."""
    gaps = np.maximum(items - 1, 0)
    gap_pos = within(gaps)
    gap_run = run_ids(gaps)
    order = np.argsort(gap_run + uniform(combine(np.repeat(keys, gaps), gap_pos)))
    rank = np.arange(gap_run.size, dtype=np.int64) - np.repeat(offsets(gaps), gaps)
    cut = np.empty(gap_run.size, dtype=bool)
    cut[order] = rank < np.repeat(segments - 1, gaps)
    total = int(items.sum())
    starts_part = np.zeros(total, dtype=bool)
    first = offsets(items)
    starts_part[first[items > 0]] = True
    starts_part[np.repeat(first, gaps) + gap_pos + 1] = cut
    part_starts = np.flatnonzero(starts_part)
    return np.diff(np.append(part_starts, total))


def noise_masks(
    lengths: np.ndarray, keys: np.ndarray, density: float, mean_span: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask over all tokens, noise counts, span counts): clean and noise spans alternate,
    starting clean, as in T5."""
    noise, spans = noise_counts_array(lengths, density, mean_span)
    noise_parts = random_segmentations(noise, spans, combine(keys, _NOISE_CUTS))
    clean_parts = random_segmentations(lengths - noise, spans, combine(keys, _CLEAN_CUTS))
    interleaved = np.stack([clean_parts, noise_parts], axis=1).reshape(-1)
    pattern = np.tile(np.array([False, True]), int(spans.sum()))
    return np.repeat(pattern, interleaved), noise, spans


def span_corrupt_block(
    tokens: np.ndarray,
    lengths: np.ndarray,
    keys: np.ndarray,
    sentinels: np.ndarray,
    eos_id: int,
    density: float,
    mean_span: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, input lengths, targets, target lengths) of every chunk, back to back.

    `tokens` holds the chunks back to back (int64), `lengths` their sizes (each >= 2).
    inputs: kept tokens with the k-th noise span replaced by sentinel k, then EOS.
    targets: for each span k, sentinel k and the span's tokens, then EOS.
    """
    mask, noise, spans = noise_masks(lengths, keys, density, mean_span)
    if int(spans.max(initial=0)) > len(sentinels):
        raise ValueError(f"{int(spans.max())} noise spans but only {len(sentinels)} sentinels")
    first = offsets(lengths)
    previous = np.empty_like(mask)
    previous[1:] = mask[:-1]
    previous[first] = False
    starts = mask & ~previous
    counted = np.cumsum(starts)
    before = counted[first] - starts[first]
    span_index = np.maximum(counted - np.repeat(before, lengths) - 1, 0)
    sentinel = sentinels[span_index]

    # Each chunk gets one extra slot at its end for EOS; slot j of chunk c is j + c places on.
    chunks = len(lengths)
    slot = np.arange(tokens.size, dtype=np.int64) + run_ids(lengths)
    eos_slot = first + lengths + np.arange(chunks, dtype=np.int64)
    size = tokens.size + chunks

    values = np.empty(size, dtype=np.int64)
    keep = np.zeros(size, dtype=bool)
    values[slot] = np.where(starts, sentinel, tokens)
    keep[slot] = ~mask | starts
    values[eos_slot], keep[eos_slot] = eos_id, True
    inputs = values[keep]

    emitted = np.empty((size, 2), dtype=np.int64)
    emit = np.zeros((size, 2), dtype=bool)
    emitted[slot, 0], emit[slot, 0] = sentinel, starts
    emitted[slot, 1], emit[slot, 1] = tokens, mask
    emitted[eos_slot, 1], emit[eos_slot, 1] = eos_id, True
    targets = emitted[emit]
    return inputs, lengths - noise + spans + 1, targets, noise + spans + 1
