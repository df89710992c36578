"""Pretraining objectives: pure, seeded functions from one document's token ids to examples.

full_lm, prefix_lm, span_corruption (T5 MLM), masked_lm (BERT) and mtf are defined here or
re-exported from the modules that hold them; `make_objective` binds one to an architecture
and a length budget, with the lengths of the package's `objective_shape`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from causeway.data_pipeline.objectives.rules import ObjectiveShape, objective_shape

from .examples import (
    Example,
    Seq2SeqExample,
    TokenIds,
    as_list,
    decoder_example,
    seq2seq_example,
)
from .span_corruption import random_spans_noise_mask, span_corruption

__all__ = [
    "Example",
    "Objective",
    "Seq2SeqExample",
    "chunk_document",
    "decoder_example",
    "full_lm",
    "make_objective",
    "masked_lm",
    "mtf",
    "prefix_lm_split",
    "random_spans_noise_mask",
    "seq2seq_example",
    "span_corruption",
]


def full_lm(doc: TokenIds) -> Example:
    """Predict every next token: tokens = doc[:-1], targets = doc[1:], all scored."""
    ids = as_list(doc)
    if len(ids) < 2:
        raise ValueError(f"full_lm needs a document of at least 2 tokens, got {len(ids)}")
    return Example(ids[:-1], ids[1:], [True] * (len(ids) - 1), prefix_length=0)


def prefix_lm_split(doc: TokenIds, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Split at a point drawn uniformly from [1, L): both halves are non-empty."""
    ids = as_list(doc)
    if len(ids) < 2:
        raise ValueError(f"prefix_lm needs a document of at least 2 tokens, got {len(ids)}")
    split = int(rng.integers(1, len(ids)))
    return ids[:split], ids[split:]


def masked_lm(
    doc: TokenIds,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    mask_prob: float = 0.15,
) -> Example:
    """BERT masking in place: choose round(L * mask_prob) positions (at least one); of those,
    80% become `mask_id`, 10% a uniformly random token, 10% stay. Targets are the original
    tokens and only chosen positions are scored. The whole example is the prefix (a
    bidirectional or prefix model sees all of it).
    """
    original = np.asarray(as_list(doc), dtype=np.int64)
    n = original.size
    if n < 1:
        raise ValueError("masked_lm needs a non-empty document")
    num_chosen = min(max(round(n * mask_prob), 1), n)
    chosen = rng.choice(n, size=num_chosen, replace=False)
    action = rng.random(num_chosen)
    corrupted = original.copy()
    corrupted[chosen[action < 0.8]] = mask_id
    randomized = chosen[(action >= 0.8) & (action < 0.9)]
    corrupted[randomized] = rng.integers(0, vocab_size, size=randomized.size)
    loss_mask = np.zeros(n, dtype=bool)
    loss_mask[chosen] = True
    return Example(corrupted.tolist(), original.tolist(), loss_mask.tolist(), prefix_length=n)


def mtf(input_ids: TokenIds, target_ids: TokenIds) -> tuple[list[int], list[int]]:
    """Multitask finetuning: the pair is given; loss on the targets only (via the adapters)."""
    return as_list(input_ids), as_list(target_ids)


def chunk_document(doc: TokenIds, raw_length: int, min_length: int = 2) -> list[TokenIds]:
    """Cut a document into consecutive chunks of `raw_length` tokens (the last may be shorter).

    Chunks shorter than `min_length` are dropped: a single token makes no LM example.
    """
    if raw_length < 1:
        raise ValueError(f"raw_length must be >= 1, got {raw_length}")
    chunks = [doc[start : start + raw_length] for start in range(0, len(doc), raw_length)]
    return [chunk for chunk in chunks if len(chunk) >= min_length]


@dataclass
class Objective:
    """An objective bound to an architecture and a length budget (see `ObjectiveShape`).

    The caller cuts documents into chunks of at most `raw_length` tokens (`chunk_document`);
    every chunk then yields an example that fits. For mtf, `__call__` takes an (inputs,
    targets) pair instead of a chunk and truncates it to fit (`takes_pairs` is True).
    """

    name: str
    arch: str
    raw_length: int
    inputs_length: int | None
    targets_length: int | None
    transform: Callable[[Any], Example | Seq2SeqExample] = field(repr=False)
    takes_pairs: bool = False

    def __call__(self, doc_chunk: Any) -> Example | Seq2SeqExample:
        return self.transform(doc_chunk)


def make_objective(
    name: str,
    arch: str,
    tokenizer: Any,
    seq_len: int,
    rng: int | np.random.Generator,
    *,
    inputs_length: int | None = None,
    targets_length: int | None = None,
    **params: float,
) -> Objective:
    """Build objective `name` for `arch` with the lengths and checks of `objective_shape`.

    `tokenizer` supplies eos/mask/sentinel ids and the vocabulary size; `params` are the
    objective's (noise_density, mean_noise_span_length, mask_prob). `rng` (seed or
    Generator) drives every random choice.
    """
    shape = objective_shape(name, arch, seq_len, inputs_length, targets_length, params)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    transform = _transform(shape, tokenizer, generator)
    return Objective(
        name, arch, shape.raw_length, shape.inputs_length, shape.targets_length, transform,
        shape.takes_pairs,
    )  # fmt: skip


def _transform(shape: ObjectiveShape, tokenizer: Any, rng: np.random.Generator) -> Callable:
    decoder, p = shape.arch == "decoder", shape.params
    adapt = decoder_example if decoder else seq2seq_example
    if shape.name == "full_lm":
        return full_lm
    if shape.name == "prefix_lm":
        return lambda doc: adapt(*prefix_lm_split(doc, rng))
    if shape.name == "masked_lm":
        vocab_size, mask_id, mask_prob = tokenizer.vocab_size, tokenizer.mask_id, p["mask_prob"]
        return lambda doc: masked_lm(doc, rng, mask_id, vocab_size, mask_prob)
    if shape.name == "mtf":
        if decoder:
            return lambda pair: decoder_example(*_fit_pair(*pair, shape.raw_length))
        inputs_length, targets_length = shape.inputs_length, shape.targets_length
        return lambda pair: seq2seq_example(*_truncate(*pair, inputs_length, targets_length))
    shape.check_sentinels(tokenizer.num_sentinels)
    sentinels = [tokenizer.sentinel_id(i) for i in range(tokenizer.num_sentinels)]
    eos, density, mean_span = tokenizer.eos_id, p["noise_density"], p["mean_noise_span_length"]
    return lambda doc: adapt(*span_corruption(doc, rng, sentinels, eos, density, mean_span))


def _truncate(
    inputs: TokenIds, targets: TokenIds, inputs_length: int, targets_length: int
) -> tuple[list[int], list[int]]:
    inputs, targets = mtf(inputs, targets)
    return inputs[:inputs_length], targets[:targets_length]


def _fit_pair(inputs: TokenIds, targets: TokenIds, budget: int) -> tuple[list[int], list[int]]:
    """Truncate an mtf pair to `budget` tokens in all: inputs are cut first (their beginning is
    kept); targets only when they alone would not leave room for one input token."""
    inputs, targets = mtf(inputs, targets)
    if len(inputs) + len(targets) <= budget:
        return inputs, targets
    targets = targets[: budget - 1]
    return inputs[: budget - len(targets)], targets
