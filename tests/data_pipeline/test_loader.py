from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
import torch

from causeway.data_pipeline.prepare.prepare import prepare_files
from causeway.data_pipeline.tokenizer import Tokenizer

from .reference.loader import batch_iterator
from .reference.objectives import make_objective

COMBINATIONS = [
    ("full_lm", "decoder"),
    ("prefix_lm", "decoder"),
    ("span_corruption", "decoder"),
    ("masked_lm", "decoder"),
    ("prefix_lm", "encoder_decoder"),
    ("span_corruption", "encoder_decoder"),
]


def _take(data_dir: Path, n: int, **kwargs) -> list[dict[str, torch.Tensor]]:
    args = {"split": "train", "tokenizer": None, "seq_len": 64, "batch_size": 4, "seed": 0}
    return list(islice(batch_iterator(data_dir, **(args | kwargs)), n))


def _equal(a: list[dict], b: list[dict]) -> bool:
    return all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(("objective", "arch"), COMBINATIONS)
def test_same_arguments_same_batches(small_builtin: Path, objective: str, arch: str) -> None:
    first = _take(small_builtin, 3, objective=objective, arch=arch)
    again = _take(small_builtin, 3, objective=objective, arch=arch)
    other = _take(small_builtin, 3, objective=objective, arch=arch, seed=1)
    assert len(first) == 3
    assert _equal(first, again)
    assert not _equal(first, other)


def test_decoder_batches_have_packed_full_lm_rows(
    small_builtin: Path, tokenizer: Tokenizer
) -> None:
    kwargs = {"objective": "full_lm", "arch": "decoder", "tokenizer": tokenizer, "seq_len": 512}
    (batch,) = _take(small_builtin, 1, **kwargs)
    assert batch["tokens"].shape == (4, 512)
    segments = batch["segment_ids"]
    assert segments.max() > 1  # most documents are shorter than 512: rows hold several
    same = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
    assert torch.equal(batch["targets"][:, :-1][same], batch["tokens"][:, 1:][same])
    assert torch.equal(batch["loss_mask"], segments > 0)
    assert (batch["prefix_lengths"] == 0).all()


def test_encoder_decoder_span_corruption_lengths(small_builtin: Path, tokenizer: Tokenizer) -> None:
    (batch,) = _take(
        small_builtin, 1, objective="span_corruption", arch="encoder_decoder", seq_len=128
    )
    inputs_length, targets_length = 128, 29  # T5 rule: 141 raw tokens -> 128 / 29
    assert batch["enc_tokens"].shape == (4, inputs_length)
    assert batch["targets"].shape == (4, targets_length)
    starts = batch["dec_positions"] == 0
    assert (batch["dec_tokens"][starts & (batch["dec_segment_ids"] > 0)] == tokenizer.pad_id).all()


def test_objective_params_and_prebuilt_objectives(
    small_builtin: Path, tokenizer: Tokenizer
) -> None:
    (denser,) = _take(
        small_builtin,
        1,
        objective="span_corruption",
        arch="decoder",
        objective_params={"noise_density": 0.5},
    )
    (default,) = _take(small_builtin, 1, objective="span_corruption", arch="decoder")
    assert denser["loss_mask"].sum() > default["loss_mask"].sum()
    built = make_objective("full_lm", "decoder", tokenizer, 64, rng=0)
    assert _take(small_builtin, 1, objective=built, arch="decoder")
    with pytest.raises(ValueError, match="built for arch"):
        _take(small_builtin, 1, objective=built, arch="encoder_decoder")


def test_mtf_pairs_flow_through_the_loader(tmp_path: Path, small_builtin: Path) -> None:
    rows = [{"inputs": f"question {i} " * 5, "targets": f"answer {i}"} for i in range(30)]
    (tmp_path / "mtf.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    data = prepare_files(
        [tmp_path / "mtf.jsonl"],
        small_builtin / "tokenizer.json",
        tmp_path / "data",
        pair_fields=("inputs", "targets"),
    )
    tok = Tokenizer.from_file(data / "tokenizer.json")
    (dec,) = _take(data, 1, objective="mtf", arch="decoder")
    first = dec["segment_ids"][0] == 1
    scored = tok.decode(dec["targets"][0][first & dec["loss_mask"][0]])
    number = scored.removeprefix("answer ").removesuffix("<eos>")
    assert scored == f"answer {number}<eos>"  # loss on the targets only (best fit reorders)
    visible = tok.decode(dec["tokens"][0][first & ~dec["loss_mask"][0]])
    assert visible.startswith(f"question {number} ")
    (ed,) = _take(data, 1, objective="mtf", arch="encoder_decoder", targets_length=16)
    assert ed["targets"].shape == (4, 16)
    inputs = tok.decode(ed["enc_tokens"][0][ed["enc_segment_ids"][0] == 1])
    number = inputs.split()[1]
    assert inputs == f"question {number} " * 5
    answer = tok.decode(ed["targets"][0][ed["dec_segment_ids"][0] == 1])
    assert answer == f"answer {number}<eos>"
