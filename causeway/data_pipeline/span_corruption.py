"""T5 span corruption: `random_spans_noise_mask`, the sentinel rewrite, and the length helper.

Ported from T5's `preprocessors.py` (random_spans_noise_mask, noise_span_to_unique_sentinel,
random_spans_helper) to numpy with an explicit `np.random.Generator`, so that it is pure and
seeded. Rounding is round-half-to-even in both T5 (tf.round / Python round) and here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from causeway.data_pipeline.examples import TokenIds, as_list

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0


def noise_counts(
    length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(noise tokens, noise spans) for a document of `length` tokens, as the mask draws them.

    Like T5 there is at least one noise token and one span, and at least one non-noise token;
    unlike T5 the span count is also capped so every span (noise and non-noise) is non-empty
    even at extreme densities.
    """
    length = max(length, 2)
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


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


def corrupted_lengths(
    raw_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int]:
    """Exact (len(inputs), len(targets)) that `span_corruption` gives a `raw_length` document.

    Both grow monotonically with `raw_length`, so a bound checked at the longest chunk holds
    for every shorter one.
    """
    num_noise, num_spans = noise_counts(raw_length, noise_density, mean_noise_span_length)
    return raw_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def span_corruption_lengths(
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int, int]:
    """T5's `random_spans_helper`: (raw tokens, inputs length, targets length).

    The largest raw length whose corrupted inputs (non-noise tokens + one sentinel per span +
    EOS) fit `inputs_length`; e.g. 512 -> 568 raw tokens, 85 noise tokens in 28 spans,
    inputs 483 + 28 + 1 = 512, targets 85 + 28 + 1 = 114.
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    real_inputs_length, targets_length = lengths(tokens_length)
    # T5's "minor hack": at density 0.5 make targets no longer than inputs.
    if noise_density == 0.5 and targets_length > real_inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, real_inputs_length, targets_length
