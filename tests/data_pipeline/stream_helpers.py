"""Helpers shared by the stream tests: taking batches, comparing them, listing what they hold."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from webdataset.tariterators import tarfile_samples

from causeway.data_pipeline.shards.index import read_index
from causeway.data_pipeline.stream import DataStream

from .reference.reader import decode_ids

Chunk = tuple[int, int, int, int]  # (source, shard, sample, chunk)


def take(stream: DataStream, n: int) -> list[dict[str, torch.Tensor]]:
    return list(itertools.islice(stream, n))


def global_batches(per_rank: list[list[dict]]) -> list[dict]:
    """The global batches from each rank's batches: rows in rank order (segment-wide arrays,
    prefix_lengths and provenance, padded to the widest rank as one process pads them)."""
    fill = {"prefix_lengths": 0, "provenance": -1}
    out = []
    for parts in zip(*per_rank, strict=True):
        batch = {}
        for key in parts[0]:
            values = [p[key] for p in parts]
            if key in fill:
                width = max(v.shape[1] for v in values)
                values = [_widen(v, width, fill[key]) for v in values]
            batch[key] = torch.cat(values)
        out.append(batch)
    return out


def _widen(value: torch.Tensor, width: int, fill: int) -> torch.Tensor:
    if value.shape[1] == width:
        return value
    shape = (value.shape[0], width - value.shape[1], *value.shape[2:])
    return torch.cat([value, torch.full(shape, fill, dtype=value.dtype)], dim=1)


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def chunks_in(batches: list[dict], epoch: int | None = 0) -> Counter:
    """(source, shard, sample, chunk) of every segment of `epoch` (all epochs if None)."""
    seen: Counter = Counter()
    for batch in batches:
        for source, ep, shard, sample, chunk, offset in batch["provenance"].reshape(-1, 6).tolist():
            if source >= 0 and offset == 0 and (epoch is None or ep == epoch):
                seen[(source, shard, sample, chunk)] += 1
    return seen


def all_chunks(data_dir: Path, raw_length: int, source: int = 0, split: str = "train") -> Counter:
    """Every chunk one epoch of `split` must produce (chunks under 2 tokens are dropped)."""
    expected: Counter = Counter()
    for shard_number, shard in enumerate(read_index(data_dir)["splits"][split]["shards"]):
        for sample, item in enumerate(tarfile_samples([{"url": str(data_dir / shard["name"])}])):
            tokens = decode_ids(item, "tokens")
            if tokens is None:
                continue
            for chunk in range(-(-len(tokens) // raw_length)):
                if min(raw_length, len(tokens) - chunk * raw_length) >= 2:
                    expected[(source, shard_number, sample, chunk)] += 1
    return expected


def run_until_epoch(streams: list[DataStream], epoch: int, limit: int = 20000) -> list[dict]:
    """Batches of all `streams` in lockstep until every one of them reads `epoch` or later."""
    batches: list[dict] = []
    for _ in range(limit):
        if all(min(_epochs(s)) >= epoch for s in streams):
            return batches
        batches += [next(s) for s in streams]
    raise AssertionError(f"epoch {epoch} not reached in {limit} steps")


def _epochs(stream: DataStream) -> list[int]:
    return [v for k, v in stream.metrics().items() if k.startswith("data/epoch/")]


def filled_tokens(batches: list[dict]) -> int:
    key = "segment_ids" if "segment_ids" in batches[0] else "dec_segment_ids"
    return int(sum(np.count_nonzero(b[key].numpy()) for b in batches))
