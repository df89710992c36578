"""index.json: the catalogue of a prepared dataset, written last so that it marks completion.

    {"version": 1, "tokenizer": "tokenizer.json", "vocab_size": V, "dtype": "uint16",
     "format": "tokens" | "pairs",
     "splits": {"train": {"shards": [{"name": ..., "documents": n, "tokens": t,
                                      "bytes": b, "sha256": hex}],
                          "documents": N, "tokens": T}, "val": {...}}}

"bytes" and "sha256" were added later; indexes without them still load (nothing to verify).

A dataset directory without index.json is incomplete by definition (prepare was interrupted or
is still running); readers refuse it and `ensure_builtin` rebuilds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

INDEX_NAME = "index.json"
INDEX_VERSION = 1
FORMATS = ("tokens", "pairs")


def index_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / INDEX_NAME


def write_json(path: Path, value: Any) -> Path:
    """Write JSON atomically: a temp file `.NAME.PID.partial` in the same directory, fsynced,
    then renamed, so a reader never sees half a file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return path


def write_index(data_dir: str | Path, index: dict[str, Any]) -> Path:
    """Write index.json atomically (`write_json`)."""
    return write_json(index_path(data_dir), index)


def remove_index(data_dir: str | Path) -> None:
    """Mark a dataset incomplete before rewriting it, so a crash cannot leave a stale index."""
    index_path(data_dir).unlink(missing_ok=True)


def read_index(data_dir: str | Path) -> dict[str, Any]:
    """Load and check index.json; errors say which dataset and which key is wrong."""
    path = index_path(data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {data_dir} is not a prepared dataset (or its preparation did "
            "not finish); run `causeway data prepare`"
        )
    with open(path, encoding="utf-8") as f:
        return parse_index(f.read(), path)


def parse_index(text: str, path: str | Path) -> dict[str, Any]:
    """Check the text of an index.json read from `path` (a file or a URL)."""
    try:
        index = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        version = index.get("version") if isinstance(index, dict) else None
        raise ValueError(f"{path}: version {version!r}, expected {INDEX_VERSION}")
    for key in ("tokenizer", "vocab_size", "dtype", "splits"):
        if key not in index:
            raise ValueError(f"{path}: missing key {key!r}")
    index.setdefault("format", "tokens")
    return index


def make_split_entry(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The index entry of a split made of `shards`: the shard entries and their totals."""
    return {
        "shards": shards,
        "documents": sum(s["documents"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
    }


def split_entry(index: dict[str, Any], split: str, where: str | Path = "index.json") -> dict:
    """The index entry of `split`, or an error that lists the splits there are."""
    splits = index["splits"]
    if split not in splits:
        raise KeyError(f"{where}: no split {split!r}; available: {sorted(splits)}")
    return splits[split]
