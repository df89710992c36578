from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from causeway.data_pipeline.tokenizer import Tokenizer

from .reference.objectives import (
    Example,
    Seq2SeqExample,
    chunk_document,
    decoder_example,
    full_lm,
    make_objective,
    masked_lm,
    mtf,
    prefix_lm_split,
    seq2seq_example,
)


def test_full_lm_shifts_by_one_and_scores_everything() -> None:
    ex = full_lm(np.array([10, 11, 12, 13]))
    assert ex == Example([10, 11, 12], [11, 12, 13], [True, True, True], 0)


def test_prefix_lm_split_is_uniform_over_1_to_l_minus_1() -> None:
    rng = np.random.default_rng(0)
    doc = list(range(100, 110))
    counts: Counter[int] = Counter()
    for _ in range(9000):
        inputs, targets = prefix_lm_split(doc, rng)
        assert inputs + targets == doc
        counts[len(inputs)] += 1
    assert sorted(counts) == list(range(1, 10))  # never 0, never L
    assert all(800 < n < 1200 for n in counts.values())  # expected 1000 each


def test_prefix_lm_two_token_document_splits_in_the_middle() -> None:
    assert prefix_lm_split([5, 6], np.random.default_rng(3)) == ([5], [6])


def test_masked_lm_rates() -> None:
    rng = np.random.default_rng(0)
    mask_id, vocab = 4, 30000
    chosen = masked = kept = randomized = 0
    for _ in range(200):
        doc = rng.integers(1000, 2000, size=1000)
        ex = masked_lm(doc, rng, mask_id, vocab)
        loss = np.array(ex.loss_mask)
        tokens, original = np.array(ex.tokens), np.array(ex.targets)
        assert (original == doc).all()
        assert (tokens[~loss] == doc[~loss]).all()  # unchosen positions untouched
        assert ex.prefix_length == len(doc)
        chosen += int(loss.sum())
        masked += int((tokens[loss] == mask_id).sum())
        kept += int((tokens[loss] == doc[loss]).sum())
        randomized += int(((tokens[loss] != mask_id) & (tokens[loss] != doc[loss])).sum())
    assert chosen == 200 * 150
    assert masked / chosen == pytest.approx(0.8, abs=0.01)
    assert kept / chosen == pytest.approx(0.1, abs=0.01)
    assert randomized / chosen == pytest.approx(0.1, abs=0.01)


def test_masked_lm_scores_at_least_one_position() -> None:
    ex = masked_lm([42, 43], np.random.default_rng(0), mask_id=4, vocab_size=100)
    assert sum(ex.loss_mask) == 1


def test_decoder_example_aligns_prefix_and_loss() -> None:
    ex = decoder_example([10, 11, 12], [20, 21])
    assert ex.tokens == [10, 11, 12, 20]
    assert ex.targets == [11, 12, 20, 21]
    # position 2 (last input) predicts the first target: scored; earlier inputs are not.
    assert ex.loss_mask == [False, False, True, True]
    assert ex.prefix_length == 3
    assert ex.tokens[: ex.prefix_length] == [10, 11, 12]


def test_decoder_example_without_inputs_is_full_lm() -> None:
    assert decoder_example([], [7, 8, 9]) == full_lm([7, 8, 9])


def test_seq2seq_example_and_mtf_keep_the_pair() -> None:
    assert mtf(np.array([1, 2]), (3,)) == ([1, 2], [3])
    assert seq2seq_example([1, 2], np.array([3])) == Seq2SeqExample([1, 2], [3])
    with pytest.raises(ValueError):
        seq2seq_example([1, 2], [])


def test_example_rejects_misaligned_fields() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        Example([1, 2], [2], [True, True], 0)
    with pytest.raises(ValueError, match="prefix_length"):
        Example([1], [2], [True], 2)


def test_chunk_document() -> None:
    doc = np.arange(10)
    chunks = chunk_document(doc, 4)
    assert [c.tolist() for c in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(c) for c in chunk_document(list(range(9)), 4)] == [4, 4]  # tail of 1 dropped
    assert len(chunk_document(list(range(9)), 4, min_length=1)) == 3


VALID = [
    ("full_lm", "decoder"),
    ("prefix_lm", "decoder"),
    ("span_corruption", "decoder"),
    ("masked_lm", "decoder"),
    ("prefix_lm", "encoder_decoder"),
    ("span_corruption", "encoder_decoder"),
]


def _fits(example: Example | Seq2SeqExample, seq_len: int, inputs: int, targets: int) -> bool:
    if isinstance(example, Example):
        return len(example) <= seq_len
    return len(example.inputs) <= inputs and len(example.targets) <= targets


@pytest.mark.parametrize(("name", "arch"), VALID)
@pytest.mark.parametrize("seq_len", [16, 100, 512])
def test_raw_length_makes_examples_that_fit_tightly(
    tokenizer: Tokenizer, name: str, arch: str, seq_len: int
) -> None:
    objective = make_objective(name, arch, tokenizer, seq_len, rng=0)
    assert objective.name == name and objective.arch == arch
    inputs_len, targets_len = objective.inputs_length, objective.targets_length
    doc = np.arange(200, 200 + objective.raw_length + 1)
    for length in (2, objective.raw_length):
        for _ in range(10):
            assert _fits(objective(doc[:length]), seq_len, inputs_len, targets_len)
    if name != "prefix_lm":  # one more raw token overflows (prefix_lm ED depends on the split)
        longer = objective(doc[: objective.raw_length + 1])
        assert not _fits(longer, seq_len, inputs_len, targets_len)


def test_encoder_decoder_span_corruption_uses_t5_lengths(tokenizer: Tokenizer) -> None:
    objective = make_objective("span_corruption", "encoder_decoder", tokenizer, 512, rng=0)
    assert (objective.raw_length, objective.inputs_length, objective.targets_length) == (
        568,
        512,
        114,
    )
    example = objective(np.arange(200, 768))
    assert (len(example.inputs), len(example.targets)) == (512, 114)


def test_decoder_span_corruption_reads_inputs_then_targets(tokenizer: Tokenizer) -> None:
    objective = make_objective("span_corruption", "decoder", tokenizer, 64, rng=0)
    example = objective(np.arange(200, 200 + objective.raw_length))
    assert len(example) == 64
    prefix = example.tokens[: example.prefix_length]
    assert prefix[-1] == tokenizer.eos_id  # the inputs end with EOS
    assert example.targets[example.prefix_length - 1] == tokenizer.sentinel_id(0)
    assert example.loss_mask == [i >= example.prefix_length - 1 for i in range(64)]


def test_mtf_pairs_are_truncated_to_fit(tokenizer: Tokenizer) -> None:
    dec = make_objective("mtf", "decoder", tokenizer, 32, rng=0)
    assert dec.takes_pairs
    example = dec((list(range(100, 150)), list(range(300, 310))))
    assert len(example) == 32
    assert example.targets[-10:] == list(range(300, 310))  # targets kept whole
    assert sum(example.loss_mask) == 10
    example = dec(([7], list(range(300, 400))))
    assert len(example) == 32 and example.tokens[0] == 7

    ed = make_objective("mtf", "encoder_decoder", tokenizer, 16, rng=0, targets_length=4)
    pair = ed((list(range(100, 150)), list(range(300, 310))))
    assert pair == Seq2SeqExample(list(range(100, 116)), list(range(300, 304)))


def test_same_seed_gives_same_examples(tokenizer: Tokenizer) -> None:
    docs = [np.arange(200, 200 + n) for n in (30, 50, 70)]
    for name in ("prefix_lm", "span_corruption", "masked_lm"):
        a = make_objective(name, "decoder", tokenizer, 64, rng=5)
        b = make_objective(name, "decoder", tokenizer, 64, rng=np.random.default_rng(5))
        c = make_objective(name, "decoder", tokenizer, 64, rng=6)
        first, second, other = ([obj(d) for d in docs] for obj in (a, b, c))
        assert first == second
        assert first != other


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("lm", "decoder"), {}, "unknown objective"),
        (("full_lm", "encoder"), {}, "unknown arch"),
        (("full_lm", "encoder_decoder"), {}, "not defined"),
        (("masked_lm", "encoder_decoder"), {}, "not defined"),
        (("span_corruption", "decoder"), {"noise_densty": 0.2}, "noise_densty"),
        (("full_lm", "decoder"), {"mask_prob": 0.2}, "allowed: none"),
    ],
)
def test_make_objective_errors(tokenizer: Tokenizer, args, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_objective(*args, tokenizer, 64, 0, **kwargs)


def test_span_corruption_needing_more_sentinels_than_the_tokenizer_has(
    tokenizer: Tokenizer,
) -> None:
    with pytest.raises(ValueError, match="sentinels"):
        make_objective("span_corruption", "encoder_decoder", tokenizer, 4096, rng=0)
