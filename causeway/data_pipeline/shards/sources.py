"""The datasets a stream reads: one prepared dataset, or a weighted mixture of several.

A `Source` names a prepared dataset (a directory or an http(s) URL prefix holding index.json
and the shards) and its weight in the mixture; `as_sources` makes sources of every way of
naming one (a config `data.mixture` entry included) and `load_source` turns a source into the
shard list of one split with everything the reader needs (URLs, document and token counts, sha256).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from causeway.config.schema import MixtureEntry
from causeway.data_pipeline.shards.index import parse_index, read_index, split_entry
from causeway.data_pipeline.shards.urls import is_local, join, local_path, read_bytes, shard_url
from causeway.data_pipeline.tokenizer import DEFAULT_NUM_SENTINELS, Tokenizer

# str | Path | Source | MixtureEntry | Mapping | (path, weight) | a sequence of these
SourceSpec = Any
_FIELDS = ("path", "weight", "name", "shards")


@dataclass(frozen=True)
class Source:
    """A prepared dataset in a mixture.

    `path`: directory or http(s) URL prefix with index.json (and, by default, the shards).
    `weight`: share of the mixture's tokens (normalised over all sources).
    `name`: label in metrics (default: the last component of `path`).
    `shards`: optional shard URL template with `{name}`, e.g. "pipe:cat /mnt/web/{name}".
    The fields are those of a run config's `data.mixture` entries (`MixtureEntry`).
    """

    path: str
    weight: float = 1.0
    name: str | None = None
    shards: str | None = None


@dataclass(frozen=True)
class ShardInfo:
    name: str
    url: str
    documents: int
    tokens: int
    sha256: str | None


@dataclass
class SourceData:
    """One source's split, loaded: what the reader, the dealer and the metrics need."""

    name: str
    path: str
    weight: float
    split: str
    shards: list[ShardInfo]
    dtype: np.dtype
    format: str
    vocab_size: int
    tokenizer_bytes: bytes

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.shards)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def extension(self) -> str:
        return f"u{self.dtype.itemsize * 8}"


def as_sources(spec: SourceSpec) -> list[Source]:
    """Normalise a dataset spec: a path, a `Source` or `MixtureEntry`, {"path":, "weight":},
    (path, weight), or a list of those. Names must be unique (they key the metrics) and
    weights positive."""
    items = [spec] if _is_single(spec) else list(spec)
    if not items:
        raise ValueError("no datasets given")
    sources = [_as_source(item) for item in items]
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"dataset names must be unique; repeated: {duplicates} (set `name`)")
    for s in sources:
        if not s.weight > 0:
            raise ValueError(f"dataset {s.name!r}: weight must be > 0, got {s.weight}")
    return sources


def _is_single(spec: SourceSpec) -> bool:
    if isinstance(spec, (str, Path, Source, MixtureEntry, Mapping)):
        return True
    return isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], (int, float))


def _as_source(item: SourceSpec) -> Source:
    """The one conversion to `Source`: every form is first read as a mapping of its fields."""
    if isinstance(item, (str, Path)):
        item = {"path": item}
    elif isinstance(item, tuple) and len(item) == 2:
        item = {"path": item[0], "weight": item[1]}
    elif isinstance(item, (Source, MixtureEntry)):
        item = {key: getattr(item, key) for key in _FIELDS}
    elif not isinstance(item, Mapping):
        raise ValueError(f"cannot read a dataset from {item!r}")
    if set(item) - set(_FIELDS) or "path" not in item:
        raise ValueError(f"a dataset entry needs 'path' (and may have weight, name, shards); "
                         f"got keys {sorted(item)}")  # fmt: skip
    path = str(item["path"])
    name = item.get("name") or os.path.basename(path.rstrip("/")) or path
    return Source(path, float(item.get("weight", 1.0)), name, item.get("shards"))


def read_index_at(location: str) -> dict[str, Any]:
    """index.json of a local dataset directory or of an http(s) URL prefix."""
    if is_local(location):
        return read_index(local_path(location))
    url = join(location, "index.json")
    try:
        text = read_bytes(url).decode("utf-8")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}: {location} is not a reachable prepared dataset") from None
    return parse_index(text, url)


def load_source(source: Source, split: str) -> SourceData:
    """The shards of `split` of `source`, with URLs resolved."""
    index = read_index_at(source.path)
    entry = split_entry(index, split, join(source.path, "index.json"))
    shards = [
        ShardInfo(
            name=s["name"],
            url=shard_url(source.path, s["name"], source.shards),
            documents=int(s["documents"]),
            tokens=int(s["tokens"]),
            sha256=s.get("sha256"),
        )
        for s in entry["shards"]
    ]
    tokenizer_bytes = read_bytes(join(source.path, index["tokenizer"]))
    return SourceData(
        name=str(source.name),
        path=source.path,
        weight=float(source.weight),
        split=split,
        shards=shards,
        dtype=np.dtype(index["dtype"]).newbyteorder("<"),
        format=index["format"],
        vocab_size=int(index["vocab_size"]),
        tokenizer_bytes=tokenizer_bytes,
    )


def shared_tokenizer(
    datas: Sequence[SourceData], num_sentinels: int = DEFAULT_NUM_SENTINELS
) -> Tokenizer:
    """The tokenizer all sources were prepared with; mixing differently tokenized data is an
    error (the same id would mean different text)."""
    first = datas[0]
    digest = hashlib.sha256(first.tokenizer_bytes).hexdigest()
    for other in datas[1:]:
        if hashlib.sha256(other.tokenizer_bytes).hexdigest() != digest:
            raise ValueError(
                f"datasets {first.name!r} and {other.name!r} were prepared with different "
                "tokenizers; a mixture needs one tokenizer"
            )
    return Tokenizer.from_str(first.tokenizer_bytes.decode("utf-8"), num_sentinels)
