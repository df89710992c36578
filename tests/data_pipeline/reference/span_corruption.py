"""T5 span corruption of one document: `random_spans_noise_mask` and the sentinel rewrite.

Ported from T5's `preprocessors.py` (random_spans_noise_mask, noise_span_to_unique_sentinel,
random_spans_helper) to numpy with an explicit `np.random.Generator`, so that it is pure and
seeded. Rounding is round-half-to-even in both T5 (tf.round / Python round) and here. The
noise counts and the length helper are the package's (`causeway.data_pipeline.objectives.rules`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from causeway.data_pipeline.objectives.rules import (
    MEAN_NOISE_SPAN_LENGTH,
    NOISE_DENSITY,
    noise_counts,
)

from .examples import TokenIds, as_list


def random_spans_noise_mask(
    length: int,
    rng: np.random.Generator,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> np.ndarray:
    """Boolean mask of `length` with about `noise_density` noise in spans of mean length ~3.

    Noise and non-noise lengths are each cut into `num_spans` random non-empty segments, then
    interleaved starting with non-noise, exactly as in T5 (without `random_roll`).
    """
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    padded_length = max(length, 2)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(padded_length - num_noise, num_spans, rng)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise = np.tile([False, True], num_spans)
    return np.repeat(is_noise, interleaved)[:length]


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of a uniformly random partition of `num_items` into `num_segments` non-empty parts.

    T5's trick: shuffle (num_segments - 1) segment starts among the num_items - 1 gaps.
    """
    first_in_segment = np.zeros(num_items - 1, dtype=np.int64)
    first_in_segment[: num_segments - 1] = 1
    rng.shuffle(first_in_segment)
    segment_id = np.concatenate([[0], np.cumsum(first_in_segment)])
    return np.bincount(segment_id, minlength=num_segments)


def span_corruption(
    doc: TokenIds,
    rng: np.random.Generator,
    sentinel_ids: Sequence[int],
    eos_id: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[list[int], list[int]]:
    """(inputs, targets) of T5 span corruption.

    inputs: the kept tokens with the k-th noise span replaced by `sentinel_ids[k]`, then EOS.
    targets: for each span k, `sentinel_ids[k]` followed by the span's tokens, then EOS.
    """
    tokens = np.asarray(as_list(doc), dtype=np.int64)
    if tokens.size < 2:
        raise ValueError(
            f"span corruption needs a document of at least 2 tokens, got {tokens.size}"
        )
    mask = random_spans_noise_mask(tokens.size, rng, noise_density, mean_noise_span_length)
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    num_spans = int(starts.sum())
    if num_spans > len(sentinel_ids):
        raise ValueError(
            f"{num_spans} noise spans but only {len(sentinel_ids)} sentinels; "
            "use shorter examples or a tokenizer with more sentinels"
        )
    sentinels = np.asarray(sentinel_ids[:num_spans], dtype=np.int64)
    span_index = np.cumsum(starts) - 1
    replaced = np.where(starts, sentinels[np.maximum(span_index, 0)], tokens)
    inputs = replaced[~mask | starts]
    noise_starts = np.flatnonzero(starts[mask])
    targets = np.insert(tokens[mask], noise_starts, sentinels)
    return inputs.tolist() + [eos_id], targets.tolist() + [eos_id]
