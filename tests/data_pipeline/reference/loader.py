"""The data path end to end in one call: shards -> documents -> examples -> packed batches.

`batch_iterator` is the single-process face of `stream.DataStream` (one rank, one lane, no
workers). A pre-built per-document `Objective` instead goes through the simple sequential path
(`iter_examples` + `packing`), which applies it document by document in stream order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from causeway.data_pipeline.packing.arrays import Batch
from causeway.data_pipeline.stream.stream import DataStream
from causeway.data_pipeline.tokenizer import Tokenizer

from .examples import Example, Seq2SeqExample
from .objectives import Objective, chunk_document
from .packing import pack_decoder, pack_seq2seq
from .reader import iter_documents, iter_pairs


def iter_examples(
    data_dir: str | Path, split: str, objective: Objective, seed: int, loop: bool
) -> Iterator[Example | Seq2SeqExample]:
    """Examples of `objective` over the split: pairs for mtf, else chunks of raw_length."""
    if objective.takes_pairs:
        for inputs, targets in iter_pairs(data_dir, split, seed, loop=loop):
            yield objective((inputs, targets))
        return
    for doc in iter_documents(data_dir, split, seed, loop=loop):
        for chunk in chunk_document(doc, objective.raw_length):
            yield objective(chunk)


def batch_iterator(
    data_dir: str | Path,
    split: str,
    objective: str | Objective,
    arch: str,
    tokenizer: Tokenizer | None,
    seq_len: int,
    batch_size: int,
    seed: int,
    loop: bool = True,
    inputs_length: int | None = None,
    targets_length: int | None = None,
    objective_params: dict[str, Any] | None = None,
) -> Iterator[Batch]:
    """Packed batches of torch tensors for `arch` ("decoder" or "encoder_decoder").

    `objective` is a name (built from `objective_params`, read through `DataStream`) or a
    built per-document `Objective`. `tokenizer=None` loads the dataset's own. Decoders pack
    to `seq_len`; encoder-decoders pack to the objective's inputs/targets lengths
    (`inputs_length` defaults to `seq_len`) with `pad_id` as the decoder start token, as in T5.
    """
    if isinstance(objective, str):
        return iter(
            DataStream(
                data_dir,
                split,
                objective,
                arch,
                seq_len,
                batch_size,
                tokenizer=tokenizer,
                seed=seed,
                readers=1,
                loop=loop,
                inputs_length=inputs_length,
                targets_length=targets_length,
                objective_params=objective_params,
            )  # fmt: skip
        )
    tokenizer = Tokenizer.from_dataset(data_dir) if tokenizer is None else tokenizer
    if objective.arch != arch:
        raise ValueError(f"objective was built for arch {objective.arch!r}, not {arch!r}")
    examples = iter_examples(data_dir, split, objective, seed, loop)
    if arch == "decoder":
        return pack_decoder(examples, seq_len, batch_size, tokenizer.pad_id)
    assert objective.inputs_length is not None and objective.targets_length is not None
    return pack_seq2seq(
        examples,
        objective.inputs_length,
        objective.targets_length,
        batch_size,
        tokenizer.pad_id,
        decoder_start_id=tokenizer.pad_id,
    )
