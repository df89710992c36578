"""The objectives' length rules and parameters, in one torch-free place.

Which objectives and architectures exist, which config fields each objective takes (with
their defaults and valid ranges), and how many raw document tokens one example consumes for
a row budget, T5's span-corruption length helper included. `objective_shape` gathers all of
it for one objective; `objectives.py`, the config checks and the per-document
specification under tests/data_pipeline/reference/ take their lengths from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OBJECTIVES = ("full_lm", "prefix_lm", "span_corruption", "masked_lm", "mtf")
ARCHS = ("decoder", "encoder_decoder")
ENCODER_DECODER_OBJECTIVES = ("prefix_lm", "span_corruption", "mtf")

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0
MASK_PROB = 0.15

# The config fields (objective.*) each objective takes, and their defaults.
OBJECTIVE_PARAMS: dict[str, tuple[str, ...]] = {
    "span_corruption": ("noise_density", "mean_noise_span_length"),
    "masked_lm": ("mask_prob",),
}
PARAM_DEFAULTS: dict[str, float] = {
    "noise_density": NOISE_DENSITY,
    "mean_noise_span_length": MEAN_NOISE_SPAN_LENGTH,
    "mask_prob": MASK_PROB,
}
_VALID = {
    "noise_density": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "mean_noise_span_length": (lambda v: v >= 1.0, ">= 1"),
    "mask_prob": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
}


def params_of(name: str, values: Any) -> dict[str, float]:
    """The parameters objective `name` takes, read from the attributes of `values` (e.g. the
    run config's `objective` section)."""
    return {param: getattr(values, param) for param in OBJECTIVE_PARAMS.get(name, ())}


def check_params(params: Mapping[str, float]) -> None:
    """ValueError naming the first parameter outside its valid range."""
    for param, value in params.items():
        valid, rule = _VALID[param]
        if not valid(value):
            raise ValueError(f"{param} must be {rule}, got {value}")


def resolve_params(name: str, params: Mapping[str, float] | None) -> dict[str, float]:
    """`params` checked against objective `name` and completed with the defaults."""
    params = dict(params or {})
    allowed = OBJECTIVE_PARAMS.get(name, ())
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(
            f"objective {name!r} got unknown parameters {sorted(unknown)}; "
            f"allowed: {sorted(allowed) or 'none'}"
        )
    check_params(params)
    return {param: params.get(param, PARAM_DEFAULTS[param]) for param in allowed}


@dataclass(frozen=True)
class ObjectiveShape:
    """An objective bound to an architecture and a length budget, without its transform.

    `raw_length`: how many raw document tokens one example consumes (documents are cut into
    chunks of at most that many, and every chunk makes an example that fits `seq_len`
    (decoder) or `inputs_length`/`targets_length` (encoder-decoder; None for decoders)).
    `row_tokens`: about how many document tokens fill one row. `takes_pairs`: examples come
    from (inputs, targets) pairs (mtf), truncated to fit. `params`: the objective's
    parameters with defaults filled in.
    """

    name: str
    arch: str
    raw_length: int
    inputs_length: int | None
    targets_length: int | None
    row_tokens: int
    takes_pairs: bool = False
    params: Mapping[str, float] = field(default_factory=dict, hash=False)

    def noise_spans(self) -> int:
        """The most noise spans (so sentinels) one example has; 0 unless span_corruption."""
        if self.name != "span_corruption":
            return 0
        p = self.params
        return noise_counts(self.raw_length, p["noise_density"], p["mean_noise_span_length"])[1]

    def check_sentinels(self, num_sentinels: int) -> None:
        """ValueError if an example can have more noise spans than the tokenizer has sentinels."""
        spans = self.noise_spans()
        if spans > num_sentinels:
            raise ValueError(
                f"examples of {self.raw_length} raw tokens have {spans} noise spans but the "
                f"tokenizer has {num_sentinels} sentinels; shorten the sequence or add sentinels"
            )


def objective_shape(
    name: str,
    arch: str,
    seq_len: int,
    inputs_length: int | None = None,
    targets_length: int | None = None,
    params: Mapping[str, float] | None = None,
) -> ObjectiveShape:
    """The lengths of objective `name` for `arch` ("decoder" or "encoder_decoder").

    Decoders: examples fit `seq_len` tokens. Encoder-decoders: inputs fit `inputs_length`
    (default `seq_len`), targets fit `targets_length` (default: T5's length rule for span
    corruption, else `inputs_length`). `params`: noise_density, mean_noise_span_length
    (span_corruption), mask_prob (masked_lm). Raises ValueError for unknown names, arches or
    parameters, values out of range and budgets too short.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {OBJECTIVES}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    resolved = resolve_params(name, params)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if arch == "decoder":
        if name == "span_corruption":
            raw = decoder_span_raw_length(seq_len, *_span(resolved))
        else:
            raw = seq_len if name == "masked_lm" else seq_len + 1
        return ObjectiveShape(name, arch, raw, None, None, seq_len, name == "mtf", resolved)
    if name not in ENCODER_DECODER_OBJECTIVES:
        raise ValueError(f"objective {name!r} is not defined for arch 'encoder_decoder'")
    inputs_length = seq_len if inputs_length is None else inputs_length
    if name == "span_corruption":
        density, mean_span = _span(resolved)
        raw, _, needed_targets = span_corruption_lengths(inputs_length, density, mean_span)
        targets_length = needed_targets if targets_length is None else targets_length
        raw = _shrink_to_fit(raw, inputs_length, targets_length, density, mean_span)
        return ObjectiveShape(name, arch, raw, inputs_length, targets_length, raw, False, resolved)
    targets_length = inputs_length if targets_length is None else targets_length
    row = inputs_length + targets_length
    raw = min(inputs_length, targets_length) + 1 if name == "prefix_lm" else row
    mtf = name == "mtf"
    return ObjectiveShape(name, arch, raw, inputs_length, targets_length, row, mtf, resolved)


def _span(params: Mapping[str, float]) -> tuple[float, float]:
    return params["noise_density"], params["mean_noise_span_length"]


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


def corrupted_lengths(
    raw_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int]:
    """Exact (len(inputs), len(targets)) that span corruption gives a `raw_length` document.

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


def decoder_span_raw_length(seq_len: int, density: float, mean_span: float) -> int:
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
