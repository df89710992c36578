"""The objectives' length rules and parameter checks (`objective_rules`), without a tokenizer."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import numpy as np
import pytest

from causeway.config.schema import ObjectiveConfig
from causeway.data_pipeline.objectives.rules import (
    OBJECTIVE_PARAMS,
    OBJECTIVES,
    PARAM_DEFAULTS,
    ObjectiveShape,
    corrupted_lengths,
    noise_counts,
    objective_shape,
    params_of,
)
from causeway.data_pipeline.objectives.span_corruption import noise_counts_array


def test_t5_shape_for_inputs_512() -> None:
    shape = objective_shape("span_corruption", "encoder_decoder", 512)
    assert (shape.raw_length, shape.inputs_length, shape.targets_length) == (568, 512, 114)
    assert shape.row_tokens == 568 and not shape.takes_pairs
    assert shape.params == {"noise_density": 0.15, "mean_noise_span_length": 3.0}
    assert shape.noise_spans() == 28  # 85 noise tokens in 28 spans


@pytest.mark.parametrize(
    ("name", "arch", "lengths"),
    [
        ("full_lm", "decoder", (65, None, None, 64, False)),
        ("prefix_lm", "decoder", (65, None, None, 64, False)),
        ("masked_lm", "decoder", (64, None, None, 64, False)),
        ("mtf", "decoder", (65, None, None, 64, True)),
        ("prefix_lm", "encoder_decoder", (65, 64, 64, 128, False)),
        ("mtf", "encoder_decoder", (128, 64, 64, 128, True)),
    ],
)
def test_raw_lengths_per_objective_and_arch(name: str, arch: str, lengths: tuple) -> None:
    shape = objective_shape(name, arch, 64)
    got = (shape.raw_length, shape.inputs_length, shape.targets_length, shape.row_tokens)
    assert got + (shape.takes_pairs,) == lengths
    assert shape.noise_spans() == 0


def test_decoder_span_raw_length_is_the_longest_that_fits() -> None:
    shape = objective_shape("span_corruption", "decoder", 64)
    assert sum(corrupted_lengths(shape.raw_length)) - 1 <= 64
    assert sum(corrupted_lengths(shape.raw_length + 1)) - 1 > 64


@pytest.mark.parametrize(
    ("args", "params", "message"),
    [
        (("lm", "decoder", 64), {}, "unknown objective"),
        (("full_lm", "encoder", 64), {}, "unknown arch"),
        (("full_lm", "encoder_decoder", 64), {}, "not defined"),
        (("masked_lm", "encoder_decoder", 64), {}, "not defined"),
        (("span_corruption", "decoder", 64), {"noise_densty": 0.2}, "noise_densty"),
        (("full_lm", "decoder", 64), {"mask_prob": 0.2}, "allowed: none"),
        (("span_corruption", "decoder", 64), {"noise_density": 1.0}, r"in \(0, 1\)"),
        (("span_corruption", "decoder", 64), {"mean_noise_span_length": 0.5}, ">= 1"),
        (("masked_lm", "decoder", 64), {"mask_prob": 0.0}, r"mask_prob must be in \(0, 1\)"),
        (("full_lm", "decoder", 1), {}, "seq_len must be >= 2"),
        (("span_corruption", "encoder_decoder", 2), {}, "too short"),
    ],
)
def test_errors(args: tuple, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        objective_shape(*args, params=params)


def test_block_noise_counts_are_the_rule() -> None:
    lengths = np.arange(0, 2000)
    for density, mean_span in [(0.15, 3.0), (0.5, 1.0), (0.9, 7.5)]:
        noise, spans = noise_counts_array(lengths, density, mean_span)
        expected = [noise_counts(int(n), density, mean_span) for n in lengths]
        assert list(zip(noise.tolist(), spans.tolist(), strict=True)) == expected


def test_sentinel_check() -> None:
    shape = objective_shape("span_corruption", "encoder_decoder", 4096)
    assert shape.noise_spans() > 100
    with pytest.raises(ValueError, match="sentinels"):
        shape.check_sentinels(100)
    objective_shape("full_lm", "decoder", 4096).check_sentinels(0)


def test_config_fields_and_defaults_match_the_rules() -> None:
    config = ObjectiveConfig()
    fields = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    assert set(PARAM_DEFAULTS) <= fields
    assert {p for params in OBJECTIVE_PARAMS.values() for p in params} == set(PARAM_DEFAULTS)
    assert all(getattr(config, p) == v for p, v in PARAM_DEFAULTS.items())
    assert params_of("masked_lm", config) == {"mask_prob": 0.15}
    assert params_of("full_lm", config) == {}
    assert typing.get_args(typing.get_type_hints(ObjectiveConfig)["name"]) == OBJECTIVES


def test_shape_is_a_frozen_dataclass() -> None:
    shape = objective_shape("full_lm", "decoder", 8)
    assert isinstance(shape, ObjectiveShape)
    with pytest.raises(dataclasses.FrozenInstanceError):
        shape.raw_length = 3  # type: ignore[misc]


def test_module_is_torch_free() -> None:
    code = (
        "import sys, causeway.data_pipeline.objectives.rules, causeway.config.checks; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
