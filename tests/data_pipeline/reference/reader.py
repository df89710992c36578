"""Streaming documents back out of a prepared dataset, through webdataset's tar iteration.

Shard order is a permutation drawn from (seed, epoch): every epoch visits every shard once in a
new but reproducible order; documents keep their order within a shard. webdataset's
`tarfile_samples` does the reading (it also opens `pipe:` and http URLs, for remote shards
later); its `WebDataset` class is avoided on purpose because its default node splitter refuses
to run under torch.distributed, and rank/worker splitting is causeway's job.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.tariterators import tarfile_samples

from causeway.data_pipeline.shards.index import read_index, split_entry

__all__ = ["iter_documents", "iter_pairs", "iter_samples", "read_index", "shard_order"]

_DTYPES = {"u16": np.dtype("<u2"), "u32": np.dtype("<u4")}


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch `epoch` visits the shards."""
    return np.random.default_rng([seed, epoch]).permutation(num_shards).tolist()


def shard_urls(data_dir: str | Path, split: str) -> list[str]:
    """Shard paths of `split`, in index order."""
    index = read_index(data_dir)
    entry = split_entry(index, split, Path(data_dir) / "index.json")
    return [str(Path(data_dir) / shard["name"]) for shard in entry["shards"]]


def iter_samples(
    data_dir: str | Path, split: str, seed: int, epoch: int = 0, loop: bool = False
) -> Iterator[dict[str, Any]]:
    """Raw webdataset samples ({"__key__": ..., "tokens.u16": bytes, ...}) of one split.

    With `loop=True` the stream goes on with epoch + 1, + 2, ... forever.
    """
    urls = shard_urls(data_dir, split)
    if not urls:
        raise ValueError(f"{data_dir}: split {split!r} has no shards")
    epochs = count(epoch) if loop else [epoch]
    for current in epochs:
        ordered = [urls[i] for i in shard_order(len(urls), seed, current)]
        yield from tarfile_samples([{"url": url} for url in ordered])


def decode_ids(sample: dict[str, Any], field: str) -> np.ndarray | None:
    """Token ids of `field` ("tokens", "inputs", "targets") as int64, or None if absent."""
    for ext, dtype in _DTYPES.items():
        data = sample.get(f"{field}.{ext}")
        if data is not None:
            return np.frombuffer(data, dtype=dtype).astype(np.int64)
    return None


def iter_documents(
    data_dir: str | Path, split: str, seed: int, epoch: int = 0, loop: bool = False
) -> Iterator[np.ndarray]:
    """1-D int64 arrays of token ids, one per document. A pair sample (mtf data) is read as
    its inputs followed by its targets, so LM objectives can also train on pair data."""
    for sample in iter_samples(data_dir, split, seed, epoch, loop):
        tokens = decode_ids(sample, "tokens")
        if tokens is None:
            tokens = np.concatenate(_pair(sample))
        yield tokens


def iter_pairs(
    data_dir: str | Path, split: str, seed: int, epoch: int = 0, loop: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) arrays of a pair dataset (prepared with `pair_fields`)."""
    for sample in iter_samples(data_dir, split, seed, epoch, loop):
        yield _pair(sample)


def _pair(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    inputs, targets = decode_ids(sample, "inputs"), decode_ids(sample, "targets")
    if inputs is None or targets is None:
        raise ValueError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} has no inputs/targets "
            f"(fields: {sorted(k for k in sample if not k.startswith('__'))})"
        )
    return inputs, targets
