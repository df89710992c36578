"""Pretraining objectives: pure, seeded functions from one document's token ids to examples.

full_lm, prefix_lm, span_corruption (T5 MLM), masked_lm (BERT) and mtf are defined here or
re-exported from the modules that hold them; `make_objective` binds one to an architecture
and a length budget and says how many raw document tokens one example consumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from causeway.data_pipeline.examples import (
    Example,
    Seq2SeqExample,
    TokenIds,
    as_list,
    decoder_example,
    seq2seq_example,
)
from causeway.data_pipeline.span_corruption import (
    MEAN_NOISE_SPAN_LENGTH,
    NOISE_DENSITY,
    corrupted_lengths,
    noise_counts,
    random_spans_noise_mask,
    span_corruption,
    span_corruption_lengths,
)

__all__ = [
    "ARCHS",
    "OBJECTIVES",
    "Example",
    "Objective",
    "Seq2SeqExample",
    "chunk_document",
    "corrupted_lengths",
    "decoder_example",
    "full_lm",
    "make_objective",
    "masked_lm",
    "mtf",
    "prefix_lm_split",
    "random_spans_noise_mask",
    "seq2seq_example",
    "span_corruption",
    "span_corruption_lengths",
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


OBJECTIVES = ("full_lm", "prefix_lm", "span_corruption", "masked_lm", "mtf")
ARCHS = ("decoder", "encoder_decoder")
_PARAMS = {
    "span_corruption": {"noise_density", "mean_noise_span_length"},
    "masked_lm": {"mask_prob"},
}


@dataclass
class Objective:
    """An objective bound to an architecture and a length budget.

    `raw_length` is how many raw document tokens one example consumes: the caller cuts
    documents into chunks of at most that length (`chunk_document`) and every chunk then
    yields an example that fits `seq_len` (decoder) or `inputs_length`/`targets_length`
    (encoder-decoder). For mtf, `__call__` takes an (inputs, targets) pair instead of a chunk
    and truncates it to fit (`takes_pairs` is True).
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
    """Build objective `name` for `arch` ("decoder" or "encoder_decoder").

    Decoders: examples fit `seq_len` tokens. Encoder-decoders: inputs fit `inputs_length`
    (default `seq_len`) and targets fit `targets_length` (default: T5's length rule for span
    corruption, else `inputs_length`). `tokenizer` supplies eos/mask/sentinel ids and the
    vocabulary size. `params`: noise_density, mean_noise_span_length (span_corruption) and
    mask_prob (masked_lm). `rng` (seed or Generator) drives every random choice.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {OBJECTIVES}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    unknown = set(params) - _PARAMS.get(name, set())
    if unknown:
        allowed = sorted(_PARAMS.get(name, set())) or "none"
        raise ValueError(
            f"objective {name!r} got unknown parameters {sorted(unknown)}; allowed: {allowed}"
        )
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if arch == "decoder":
        return _decoder_objective(name, tokenizer, seq_len, generator, params)
    inputs_length = seq_len if inputs_length is None else inputs_length
    return _encoder_decoder_objective(
        name, tokenizer, inputs_length, targets_length, generator, params
    )


def _decoder_objective(
    name: str, tokenizer: Any, seq_len: int, rng: np.random.Generator, params: dict
) -> Objective:
    def make(raw_length: int, transform: Callable, takes_pairs: bool = False) -> Objective:
        return Objective(name, "decoder", raw_length, None, None, transform, takes_pairs)

    if name == "full_lm":
        return make(seq_len + 1, full_lm)
    if name == "prefix_lm":
        return make(seq_len + 1, lambda doc: decoder_example(*prefix_lm_split(doc, rng)))
    if name == "masked_lm":
        mask_prob = params.get("mask_prob", 0.15)
        vocab_size, mask_id = tokenizer.vocab_size, tokenizer.mask_id
        return make(seq_len, lambda doc: masked_lm(doc, rng, mask_id, vocab_size, mask_prob))
    if name == "mtf":
        return make(seq_len + 1, lambda pair: decoder_example(*_fit_pair(*pair, seq_len + 1)), True)
    density, mean_span = _span_params(params)
    raw = _decoder_span_raw_length(seq_len, density, mean_span)
    corrupt = _span_corrupter(tokenizer, rng, raw, density, mean_span)
    return make(raw, lambda doc: decoder_example(*corrupt(doc)))


def _encoder_decoder_objective(
    name: str,
    tokenizer: Any,
    inputs_length: int,
    targets_length: int | None,
    rng: np.random.Generator,
    params: dict,
) -> Objective:
    if name in ("full_lm", "masked_lm"):
        raise ValueError(f"objective {name!r} is not defined for arch 'encoder_decoder'")
    if name == "span_corruption":
        density, mean_span = _span_params(params)
        raw, _, needed_targets = span_corruption_lengths(inputs_length, density, mean_span)
        targets_length = needed_targets if targets_length is None else targets_length
        raw = _shrink_to_fit(raw, inputs_length, targets_length, density, mean_span)
        corrupt = _span_corrupter(tokenizer, rng, raw, density, mean_span)
        transform = lambda doc: seq2seq_example(*corrupt(doc))
        return Objective(name, "encoder_decoder", raw, inputs_length, targets_length, transform)
    targets_length = inputs_length if targets_length is None else targets_length
    if name == "prefix_lm":
        raw = min(inputs_length, targets_length) + 1
        transform = lambda doc: seq2seq_example(*prefix_lm_split(doc, rng))
        return Objective(name, "encoder_decoder", raw, inputs_length, targets_length, transform)

    def truncate(pair: tuple[TokenIds, TokenIds]) -> Seq2SeqExample:
        inputs, targets = mtf(*pair)
        return seq2seq_example(inputs[:inputs_length], targets[:targets_length])

    raw = inputs_length + targets_length
    return Objective(name, "encoder_decoder", raw, inputs_length, targets_length, truncate, True)


def _span_params(params: dict) -> tuple[float, float]:
    density = params.get("noise_density", NOISE_DENSITY)
    mean_span = params.get("mean_noise_span_length", MEAN_NOISE_SPAN_LENGTH)
    if not 0.0 < density < 1.0 or mean_span < 1.0:
        raise ValueError(
            "need 0 < noise_density < 1 and mean_noise_span_length >= 1, "
            f"got {density}, {mean_span}"
        )
    return density, mean_span


def _span_corrupter(
    tokenizer: Any, rng: np.random.Generator, raw: int, density: float, mean_span: float
) -> Callable[[TokenIds], tuple[list[int], list[int]]]:
    """span_corruption bound to the tokenizer's ids, checked once for enough sentinels."""
    sentinels = [tokenizer.sentinel_id(i) for i in range(tokenizer.num_sentinels)]
    spans = noise_counts(raw, density, mean_span)[1]
    if spans > len(sentinels):
        raise ValueError(
            f"examples of {raw} raw tokens have {spans} noise spans but the tokenizer has "
            f"{len(sentinels)} sentinels; shorten the sequence or add sentinels"
        )
    eos = tokenizer.eos_id
    return lambda doc: span_corruption(doc, rng, sentinels, eos, density, mean_span)


def _decoder_span_raw_length(seq_len: int, density: float, mean_span: float) -> int:
    """Largest raw length whose inputs + targets, read as one sequence, fit `seq_len` positions.

    The sequence inputs + targets gives len - 1 positions; the total grows strictly with the
    raw length, so the first overshoot ends the search.
    """
    raw = 2
    if sum(corrupted_lengths(raw, density, mean_span)) - 1 > seq_len:
        raise ValueError(f"seq_len {seq_len} is too short for span corruption")
    while sum(corrupted_lengths(raw + 1, density, mean_span)) - 1 <= seq_len:
        raw += 1
    return raw


def _shrink_to_fit(
    raw: int, inputs_length: int, targets_length: int, density: float, mean_span: float
) -> int:
    """T5's helper ignores its own clamps (at least one span); make sure the real mask fits."""
    while raw >= 2:
        inputs, targets = corrupted_lengths(raw, density, mean_span)
        if inputs <= inputs_length and targets <= targets_length:
            return raw
        raw -= 1
    raise ValueError(
        f"inputs_length {inputs_length} / targets_length {targets_length} are too short "
        "for span corruption"
    )


def _fit_pair(inputs: TokenIds, targets: TokenIds, budget: int) -> tuple[list[int], list[int]]:
    """Truncate an mtf pair to `budget` tokens in all: inputs are cut first (their beginning is
    kept); targets only when they alone would not leave room for one input token."""
    inputs, targets = mtf(inputs, targets)
    if len(inputs) + len(targets) <= budget:
        return inputs, targets
    targets = targets[: budget - 1]
    return inputs[: budget - len(targets)], targets
