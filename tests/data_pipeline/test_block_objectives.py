"""The vectorised objectives against the per-document reference implementations."""

from __future__ import annotations

import numpy as np
import pytest

from causeway.data_pipeline.objectives.examples import DocBlock, Examples
from causeway.data_pipeline.objectives.objectives import make_block_objective
from causeway.data_pipeline.objectives.rules import corrupted_lengths
from causeway.data_pipeline.tokenizer import Tokenizer

from .reference.objectives import (
    Example,
    Seq2SeqExample,
    chunk_document,
    decoder_example,
    full_lm,
    make_objective,
)


def block(docs: list[np.ndarray], first_chunk: int = 0, pairs: list[int] | None = None,
          shard: int = 0, first_sample: int = 0) -> DocBlock:  # fmt: skip
    return DocBlock(
        source=0, epoch=0, shard=shard, piece_stop=10**6,
        samples=np.arange(first_sample, first_sample + len(docs)),
        tokens=np.concatenate(docs).astype(np.uint16),
        lengths=np.array([len(d) for d in docs]),
        input_lengths=None if pairs is None else np.array(pairs),
        first_chunk=first_chunk, next_sample=0, piece_done=False,
    )  # fmt: skip


def random_docs(n: int, seed: int, longest: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(110, 500, size=int(rng.integers(1, longest))) for _ in range(n)]


def decoder_examples(ex: Examples) -> list[Example]:
    bounds = np.concatenate([[0], np.cumsum(ex.lengths)])
    return [
        Example(
            ex.tokens[a:b].tolist(),
            ex.targets[a:b].tolist(),
            ex.loss_mask[a:b].tolist(),
            int(ex.prefix[i]),
        )  # fmt: skip
        for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))
    ]


def seq2seq_examples(ex: Examples) -> list[Seq2SeqExample]:
    ins = np.split(ex.inputs, np.cumsum(ex.input_lengths)[:-1])
    outs = np.split(ex.targets, np.cumsum(ex.target_lengths)[:-1])
    return [Seq2SeqExample(i.tolist(), t.tolist()) for i, t in zip(ins, outs, strict=True)]


def reference_chunks(docs: list[np.ndarray], raw: int) -> list[list[int]]:
    return [list(map(int, c)) for d in docs for c in chunk_document(d, raw)]


def test_full_lm_matches_the_reference(tokenizer: Tokenizer) -> None:
    docs = random_docs(60, seed=0)
    objective = make_block_objective("full_lm", "decoder", tokenizer, 64)
    ex = objective(block(docs), seed=0)
    assert decoder_examples(ex) == [full_lm(c) for c in reference_chunks(docs, 65)]
    assert ex.raw.tolist() == [len(c) for c in reference_chunks(docs, 65)]


def test_resumed_document_skips_its_consumed_chunks(tokenizer: Tokenizer) -> None:
    docs = random_docs(5, seed=1, longest=400)
    docs[0] = np.arange(110, 110 + 300)
    objective = make_block_objective("full_lm", "decoder", tokenizer, 64)
    whole = decoder_examples(objective(block(docs), seed=0))
    resumed = decoder_examples(objective(block(docs, first_chunk=2), seed=0))
    assert resumed == whole[2:]


def test_prefix_lm_splits_uniformly_and_reads_like_decoder_example(tokenizer: Tokenizer) -> None:
    docs = [np.arange(110, 121)] * 3000  # 11 tokens: split points 1..10
    dec = make_block_objective("prefix_lm", "decoder", tokenizer, 64)(block(docs), seed=0)
    splits = dec.prefix
    for example, split in zip(decoder_examples(dec)[:50], splits, strict=False):
        assert example == decoder_example(docs[0][:split], docs[0][split:])
    counts = np.bincount(splits, minlength=11)[1:]
    assert counts.min() > 240 and counts.max() < 360 and counts.sum() == 3000  # ~300 each
    ed = make_block_objective("prefix_lm", "encoder_decoder", tokenizer, 64)(block(docs), seed=0)
    for example in seq2seq_examples(ed)[:50]:
        assert example.inputs + example.targets == docs[0].tolist()
        assert example.inputs and example.targets


def test_masked_lm_counts_and_rates(tokenizer: Tokenizer) -> None:
    docs = random_docs(400, seed=2)
    ex = make_block_objective("masked_lm", "decoder", tokenizer, 64)(block(docs), seed=0)
    chosen = actions = 0
    kinds = np.zeros(3)
    for example in decoder_examples(ex):
        n, mask = len(example), np.array(example.loss_mask)
        assert mask.sum() == min(max(round(n * 0.15), 1), n) and example.prefix_length == n
        tokens, targets = np.array(example.tokens), np.array(example.targets)
        assert (tokens[~mask] == targets[~mask]).all()
        masked = tokens[mask] == tokenizer.mask_id
        kept = (tokens[mask] == targets[mask]) & ~masked
        kinds += [masked.sum(), (~masked & ~kept).sum(), kept.sum()]
        chosen += mask.sum()
        actions += len(tokens[mask])
    assert actions == chosen
    rates = kinds / chosen
    assert abs(rates[0] - 0.8) < 0.04 and abs(rates[1] - 0.1) < 0.03 and abs(rates[2] - 0.1) < 0.03


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_span_corruption_lengths_and_reconstruction(tokenizer: Tokenizer, arch: str) -> None:
    docs = random_docs(300, seed=3, longest=600)
    objective = make_block_objective("span_corruption", arch, tokenizer, 128)
    ex = objective(block(docs), seed=0)
    chunks = reference_chunks(docs, objective.raw_length)
    sentinels = set(tokenizer.sentinel_ids())
    noise = spans = 0
    pairs = seq2seq_examples(ex) if arch == "encoder_decoder" else None
    for i, chunk in enumerate(chunks):
        if pairs is None:
            example = decoder_examples(ex)[i] if i < 40 else None
            if example is None:
                break
            sequence = example.tokens + example.targets[-1:]
            split = example.prefix_length
            inputs, targets = sequence[:split], sequence[split:]
        else:
            inputs, targets = pairs[i].inputs, pairs[i].targets
        assert (len(inputs), len(targets)) == corrupted_lengths(len(chunk))
        assert inputs[-1] == targets[-1] == tokenizer.eos_id
        # Put the spans back where their sentinels are.
        spans_of = {}
        current = None
        for token in targets[:-1]:
            if token in sentinels:
                current = token
                spans_of[current] = []
            else:
                spans_of[current].append(token)
        rebuilt = [t for s in inputs[:-1] for t in (spans_of[s] if s in sentinels else [s])]
        assert rebuilt == chunk
        noise += sum(len(v) for v in spans_of.values())
        spans += len(spans_of)
    if pairs is not None:
        total = sum(len(c) for c in chunks)
        assert abs(noise / total - 0.15) < 0.01 and abs(noise / spans - 3.0) < 0.3


def test_mtf_truncates_like_the_reference(tokenizer: Tokenizer) -> None:
    rng = np.random.default_rng(4)
    pairs = [(rng.integers(110, 500, int(rng.integers(0, 90))),
              rng.integers(110, 500, int(rng.integers(1, 90)))) for _ in range(200)]  # fmt: skip
    docs = [np.concatenate(p) for p in pairs]
    cuts = [len(p[0]) for p in pairs]
    dec = make_block_objective("mtf", "decoder", tokenizer, 64)(block(docs, pairs=cuts), 0)
    reference = make_objective("mtf", "decoder", tokenizer, 64, rng=0)
    assert decoder_examples(dec) == [reference(p) for p in pairs]
    ed = make_block_objective("mtf", "encoder_decoder", tokenizer, 64, targets_length=16)
    reference = make_objective("mtf", "encoder_decoder", tokenizer, 64, 0, targets_length=16)
    assert seq2seq_examples(ed(block(docs, pairs=cuts), 0)) == [reference(p) for p in pairs]


@pytest.mark.parametrize("name", ["prefix_lm", "span_corruption", "masked_lm"])
def test_randomness_belongs_to_the_document_not_the_block(tokenizer: Tokenizer, name: str) -> None:
    """A document gives the same example in any block (any lane, worker or resumption) and
    another one under another seed."""
    docs = random_docs(20, seed=5)
    objective = make_block_objective(name, "decoder", tokenizer, 64)
    whole = decoder_examples(objective(block(docs), seed=7))
    tail = decoder_examples(objective(block(docs[12:], first_sample=12), seed=7))
    assert whole[-len(tail) :] == tail
    assert decoder_examples(objective(block(docs), seed=8)) != whole
    other_shard = decoder_examples(objective(block(docs, shard=1), seed=7))
    assert other_shard != whole
