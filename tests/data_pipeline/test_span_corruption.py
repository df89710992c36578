from __future__ import annotations

import numpy as np
import pytest

from causeway.data_pipeline.objectives.rules import corrupted_lengths, span_corruption_lengths

from .reference.span_corruption import random_spans_noise_mask, span_corruption

SENTINELS = list(range(5, 105))
EOS = 1


def _t5_lengths(raw: int, density: float = 0.15, mean: float = 3.0) -> tuple[int, int]:
    """T5's rule written out independently: non-noise + sentinels + EOS, noise + sentinels + EOS."""
    noise = int(np.round(raw * density))
    spans = int(np.round(noise / mean))
    return raw - noise + spans + 1, noise + spans + 1


def test_paper_lengths() -> None:
    assert span_corruption_lengths(512) == (568, 512, 114)


@pytest.mark.parametrize("inputs_length", [64, 128, 256, 626, 1024])
def test_lengths_follow_t5_rule(inputs_length: int) -> None:
    raw, inputs, targets = span_corruption_lengths(inputs_length)
    assert (inputs, targets) == _t5_lengths(raw)
    assert inputs <= inputs_length
    assert _t5_lengths(raw + 1)[0] > inputs_length  # raw is the largest that fits


def test_density_half_keeps_targets_no_longer_than_inputs() -> None:
    raw, inputs, targets = span_corruption_lengths(100, noise_density=0.5)
    assert targets <= inputs
    assert raw < 2 * 100


def test_realised_noise_density_and_mean_span_length() -> None:
    rng = np.random.default_rng(0)
    noise = spans = total = 0
    for _ in range(400):
        length = int(rng.integers(100, 1000))
        mask = random_spans_noise_mask(length, rng)
        noise += int(mask.sum())
        spans += int((mask & ~np.concatenate([[False], mask[:-1]])).sum())
        total += length
    assert noise / total == pytest.approx(0.15, abs=0.002)
    assert noise / spans == pytest.approx(3.0, abs=0.1)


def test_mask_starts_clean_ends_noisy_and_span_lengths_vary() -> None:
    rng = np.random.default_rng(1)
    first_span_lengths = set()
    for _ in range(200):
        mask = random_spans_noise_mask(568, rng)
        assert not mask[0] and mask[-1]
        assert mask.sum() == 85
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        assert len(starts) == 28
        first_span_lengths.add(int(np.argmin(mask[starts[0] :]) or mask.size - starts[0]))
    assert len(first_span_lengths) > 4  # segmentation is random, not fixed lengths


def _spans_of(sequence: list[int]) -> dict[int, list[int]]:
    """sentinel -> tokens after it, up to the next sentinel or EOS."""
    spans: dict[int, list[int]] = {}
    current = None
    for token in sequence[:-1]:
        if token in SENTINELS:
            current = token
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    return spans


@pytest.mark.parametrize("length", [2, 3, 10, 57, 568, 1000])
def test_inputs_and_targets_reconstruct_the_document(length: int) -> None:
    rng = np.random.default_rng(length)
    for _ in range(20):
        doc = rng.integers(200, 300, size=length).tolist()
        inputs, targets = span_corruption(doc, rng, SENTINELS, EOS)
        assert inputs[-1] == EOS and targets[-1] == EOS
        used = [t for t in inputs if t in SENTINELS]
        assert used == SENTINELS[: len(used)]  # sentinels in order 0, 1, 2, ...
        assert [t for t in targets if t in SENTINELS] == used
        assert targets[0] == SENTINELS[0]
        spans = _spans_of(targets)
        rebuilt = [x for t in inputs[:-1] for x in (spans[t] if t in SENTINELS else [t])]
        assert rebuilt == doc
        assert (len(inputs), len(targets)) == corrupted_lengths(length)


def test_same_seed_same_corruption_other_seed_other() -> None:
    doc = list(range(200, 400))
    a = span_corruption(doc, np.random.default_rng(7), SENTINELS, EOS)
    b = span_corruption(doc, np.random.default_rng(7), SENTINELS, EOS)
    c = span_corruption(doc, np.random.default_rng(8), SENTINELS, EOS)
    assert a == b
    assert a != c


def test_accepts_numpy_documents() -> None:
    doc = np.arange(200, 300, dtype=np.uint16)
    inputs, targets = span_corruption(doc, np.random.default_rng(0), SENTINELS, EOS)
    assert all(type(t) is int for t in inputs + targets)


def test_too_few_sentinels_is_an_error() -> None:
    with pytest.raises(ValueError, match="sentinels"):
        span_corruption(list(range(1000)), np.random.default_rng(0), SENTINELS[:3], EOS)


def test_one_token_document_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        span_corruption([7], np.random.default_rng(0), SENTINELS, EOS)
