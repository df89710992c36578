"""The pretraining objectives applied to a whole block of documents at once (numpy, no loop per
document or token).

Lengths and parameters are those of `rules.objective_shape`; semantics (loss masks,
prefixes, chunking and truncation rules) are those of the per-document specification in
tests/data_pipeline/reference/, checked against it in tests. Only the source of randomness
differs: every random choice is hashed from (seed, source, epoch, shard, sample, chunk) so
that an example is the same however the data is split among ranks, readers and workers and
wherever a run resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from causeway.data_pipeline.objectives.examples import (
    DocBlock,
    Examples,
    chunk_block,
    decoder_from_pairs,
    position_keys,
)
from causeway.data_pipeline.objectives.hash_random import below, combine, uniform
from causeway.data_pipeline.objectives.ops import offsets, take_runs, within
from causeway.data_pipeline.objectives.rules import (
    MASK_PROB,
    MEAN_NOISE_SPAN_LENGTH,
    NOISE_DENSITY,
    ObjectiveShape,
    objective_shape,
)
from causeway.data_pipeline.objectives.span_corruption import span_corrupt_block

_SPLIT, _CHOOSE, _ACTION, _RANDOM_TOKEN = 11, 12, 13, 14
Transform = Callable[[DocBlock, int], Examples]


@dataclass
class BlockObjective:
    """An objective bound to an architecture and length budget, applied per DocBlock.

    `raw_length`, `inputs_length` and `targets_length` are those of `objective_shape`;
    `row_tokens` is about how many document tokens fill one row (for the finite-pass rule).
    `splittable`: examples are position-wise (full_lm, masked_lm on decoders), so the packer
    may split one across two rows; other examples are atomic.
    """

    name: str
    arch: str
    raw_length: int
    inputs_length: int | None
    targets_length: int | None
    row_tokens: int
    takes_pairs: bool
    apply: Transform

    @property
    def splittable(self) -> bool:
        return self.arch == "decoder" and self.name in ("full_lm", "masked_lm")

    def __call__(self, docs: DocBlock, seed: int) -> Examples:
        return self.apply(docs, seed)


def make_block_objective(
    name: str,
    arch: str,
    tokenizer: Any,
    seq_len: int,
    inputs_length: int | None = None,
    targets_length: int | None = None,
    params: dict[str, float] | None = None,
) -> BlockObjective:
    """Build `name` for `arch` with the checks and length rules of `objective_shape` (and
    enough sentinels in `tokenizer` for span corruption)."""
    spec = objective_shape(name, arch, seq_len, inputs_length, targets_length, params)
    spec.check_sentinels(tokenizer.num_sentinels)
    row, params = spec.row_tokens, dict(spec.params)
    return BlockObjective(
        name, arch, spec.raw_length, spec.inputs_length, spec.targets_length, row,
        spec.takes_pairs, _transform(spec, tokenizer, params),
    )  # fmt: skip


def _transform(spec: ObjectiveShape, tokenizer: Any, params: dict[str, float]) -> Transform:
    """The block function of `spec` (a partial of a module-level function: picklable, so a
    stream can be sent to DataLoader workers started with spawn)."""
    raw, decoder = spec.raw_length, spec.arch == "decoder"
    if spec.name == "full_lm":
        return partial(_full_lm, raw=raw)
    if spec.name == "prefix_lm":
        return partial(_prefix_lm, raw=raw, decoder=decoder)
    if spec.name == "masked_lm":
        return partial(_masked_lm, raw=raw, mask_prob=params.get("mask_prob", MASK_PROB),
                       mask_id=tokenizer.mask_id, vocab_size=tokenizer.vocab_size)  # fmt: skip
    if spec.name == "mtf":
        return partial(_mtf, raw=raw, decoder=decoder, inputs_length=spec.inputs_length,
                       targets_length=spec.targets_length)  # fmt: skip
    return partial(
        _span_corruption, raw=raw, decoder=decoder,
        sentinels=np.asarray(tokenizer.sentinel_ids(), dtype=np.int64), eos_id=tokenizer.eos_id,
        density=params.get("noise_density", NOISE_DENSITY),
        mean_span=params.get("mean_noise_span_length", MEAN_NOISE_SPAN_LENGTH),
    )  # fmt: skip


def _span_corruption(
    docs: DocBlock, seed: int, raw: int, decoder: bool, sentinels: np.ndarray, eos_id: int,
    density: float, mean_span: float,
) -> Examples:  # fmt: skip
    chunks = chunk_block(docs, raw, seed)
    tokens = take_runs(docs.tokens, chunks.starts, chunks.lengths)
    pairs = span_corrupt_block(tokens, chunks.lengths, chunks.keys, sentinels, eos_id, density,
                               mean_span)  # fmt: skip
    return _from_pairs(docs, chunks.doc, chunks.chunk, chunks.lengths, pairs, decoder)


def _shifted(docs: DocBlock, c, loss_mask_of, prefix: np.ndarray) -> Examples:
    """Decoder examples of whole chunks: tokens = chunk[:-1], targets = chunk[1:]."""
    lengths = c.lengths - 1
    return Examples(
        docs, c.doc, c.chunk, c.lengths,
        targets=take_runs(docs.tokens, c.starts + 1, lengths),
        lengths=lengths,
        tokens=take_runs(docs.tokens, c.starts, lengths),
        loss_mask=loss_mask_of(lengths),
        prefix=prefix,
    )  # fmt: skip


def _full_lm(docs: DocBlock, seed: int, raw: int) -> Examples:
    chunks = chunk_block(docs, raw, seed)
    every = lambda lengths: np.ones(int(lengths.sum()), dtype=bool)  # noqa: E731
    return _shifted(docs, chunks, every, np.zeros(len(chunks.lengths), dtype=np.int64))


def _prefix_lm(docs: DocBlock, seed: int, raw: int, decoder: bool) -> Examples:
    """Split each chunk at a point uniform in [1, L): inputs before it, targets after."""
    c = chunk_block(docs, raw, seed)
    split = 1 + below(combine(c.keys, _SPLIT), c.lengths - 1)
    if not decoder:
        inputs = take_runs(docs.tokens, c.starts, split)
        targets = take_runs(docs.tokens, c.starts + split, c.lengths - split)
        return Examples(docs, c.doc, c.chunk, c.lengths, targets, inputs=inputs,
                        input_lengths=split, target_lengths=c.lengths - split)  # fmt: skip
    targets_only = lambda lengths: within(lengths) >= np.repeat(split - 1, lengths)  # noqa: E731
    return _shifted(docs, c, targets_only, split)


def _masked_lm(
    docs: DocBlock, seed: int, raw: int, mask_prob: float, mask_id: int, vocab_size: int
) -> Examples:
    """BERT masking: round(L * p) positions (at least one) chosen uniformly; 80% become the
    mask, 10% a random token, 10% stay; only chosen positions are scored."""
    c = chunk_block(docs, raw, seed)
    n = c.lengths
    original = take_runs(docs.tokens, c.starts, n)
    count = np.minimum(np.maximum(np.rint(n * mask_prob).astype(np.int64), 1), n)
    chunk_of = np.repeat(np.arange(len(n), dtype=np.int64), n)
    order = np.argsort(chunk_of + uniform(position_keys(c.keys, _CHOOSE, n)))
    chosen = np.empty(original.size, dtype=bool)
    chosen[order] = within(n) < np.repeat(count, n)
    action = uniform(position_keys(c.keys, _ACTION, n))
    corrupted = original.copy()
    corrupted[chosen & (action < 0.8)] = mask_id
    randomized = chosen & (action >= 0.8) & (action < 0.9)
    random_tokens = below(position_keys(c.keys, _RANDOM_TOKEN, n), vocab_size)
    corrupted[randomized] = random_tokens[randomized]
    return Examples(docs, c.doc, c.chunk, n, targets=original, lengths=n, tokens=corrupted,
                    loss_mask=chosen, prefix=n.copy())  # fmt: skip


def _mtf(
    docs: DocBlock,
    seed: int,
    raw: int,
    decoder: bool,
    inputs_length: int | None,
    targets_length: int | None,
) -> Examples:
    """(inputs, targets) pairs, truncated as `objectives.mtf` does; one example per pair."""
    if docs.input_lengths is None:
        raise ValueError("objective 'mtf' needs pair data (prepare with pair_fields)")
    n, inputs = docs.lengths, docs.input_lengths
    targets = n - inputs
    if decoder:
        over = inputs + targets > raw
        kept_targets = np.where(over, np.minimum(targets, raw - 1), targets)
        kept_inputs = np.where(over, np.minimum(inputs, raw - kept_targets), inputs)
    else:
        kept_inputs = np.minimum(inputs, inputs_length)
        kept_targets = np.minimum(targets, targets_length)
    starts = offsets(n)
    pairs = (
        take_runs(docs.tokens, starts, kept_inputs),
        kept_inputs,
        take_runs(docs.tokens, starts + inputs, kept_targets),
        kept_targets,
    )
    index = np.arange(len(n), dtype=np.int64)
    return _from_pairs(docs, index, np.zeros_like(index), n, pairs, decoder)


def _from_pairs(
    docs: DocBlock,
    doc: np.ndarray,
    chunk: np.ndarray,
    raw: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    decoder: bool,
) -> Examples:
    inputs, input_lengths, targets, target_lengths = pairs
    if not decoder:
        return Examples(docs, doc, chunk, raw, targets, inputs=inputs,
                        input_lengths=input_lengths, target_lengths=target_lengths)  # fmt: skip
    tokens, shifted, loss_mask, lengths, prefix = decoder_from_pairs(*pairs)
    return Examples(docs, doc, chunk, raw, shifted, lengths=lengths, tokens=tokens,
                    loss_mask=loss_mask, prefix=prefix)  # fmt: skip
