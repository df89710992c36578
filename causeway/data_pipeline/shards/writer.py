"""Writing token shards in the webdataset tar format.

One sample per document: `__key__` is the zero-padded document number and `tokens.u16` (or
`.u32` for vocabularies over 65536) holds the raw little-endian ids. Pair data (mtf) stores
`inputs.u16` and `targets.u16` instead. A shard is closed when the next document would take it
past `shard_bytes` (and, if given, at `docs_per_shard` documents). Shards are written under a
temporary name, fsynced and renamed when complete (a shard that exists is whole), and tar
headers carry fixed mtime/uid/gid, so the same input gives identical bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from causeway.data_pipeline.shards.index import make_split_entry
from causeway.data_pipeline.shards.tar_writer import TarShardWriter, archive_bytes, member_bytes

KEY_DIGITS = 9
FIELDS = ("tokens", "inputs", "targets")
DEFAULT_SHARD_BYTES = 256 * 2**20


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest little-endian unsigned type that holds every id of the vocabulary."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def dtype_name(dtype: np.dtype) -> str:
    """ "uint16" / "uint32": the name recorded in index.json."""
    return np.dtype(dtype).name


def extension(dtype: np.dtype) -> str:
    """ "u16" / "u32": the sample field suffix for ids of this dtype."""
    return f"u{np.dtype(dtype).itemsize * 8}"


def document_key(number: int) -> str:
    """Zero-padded so that keys sort like numbers (and contain no dots, which tar keys split on)."""
    return f"{number:0{KEY_DIGITS}d}"


def shard_name(split: str, index: int, unit: int | None = None) -> str:
    """`train-000003.tar`, or `train-00002-000003.tar` for shard 3 of input file 2."""
    if unit is None:
        return f"{split}-{index:06d}.tar"
    return f"{split}-{unit:05d}-{index:06d}.tar"


def partial_path(out_dir: Path, name: str) -> Path:
    """Where shard `name` is written before the rename that makes it visible."""
    return out_dir / f".{name}.{os.getpid()}.partial"


class SplitWriter:
    """Writes one split's samples into shards and records each finished shard's entry
    ({"name", "documents", "tokens", "bytes", "sha256"}) for the index."""

    def __init__(
        self,
        out_dir: Path,
        split: str,
        dtype: np.dtype,
        docs_per_shard: int | None = None,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        unit: int | None = None,
        first_shard: int = 0,
        on_shard: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if docs_per_shard is not None and docs_per_shard < 1:
            raise ValueError(f"docs_per_shard must be >= 1, got {docs_per_shard}")
        if shard_bytes < 2 * 10240:
            raise ValueError(f"shard_bytes must be at least 20 KiB, got {shard_bytes}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.dtype = np.dtype(dtype)
        self.docs_per_shard = docs_per_shard
        self.shard_bytes = shard_bytes
        self.unit = unit
        self.next_index = first_shard
        self.on_shard = on_shard
        self.shards: list[dict[str, Any]] = []
        self._writer: TarShardWriter | None = None
        self._entry: dict[str, Any] = {}

    def write(self, number: int, **fields: Sequence[int] | np.ndarray) -> None:
        """Write document `number`; `fields` is `tokens=...` or `inputs=..., targets=...`."""
        unknown = set(fields) - set(FIELDS)
        if unknown or not fields:
            raise ValueError(f"sample fields must be among {FIELDS}, got {sorted(fields)}")
        arrays = {name: np.asarray(ids, dtype=self.dtype) for name, ids in fields.items()}
        size = sum(member_bytes(a.nbytes) for a in arrays.values())
        if self._writer is not None and self._full(size):
            self._close_current()
        if self._writer is None:
            self._open_next()
        key, ext = document_key(number), extension(self.dtype)
        for name, array in arrays.items():
            self._writer.add(f"{key}.{name}.{ext}", array.tobytes())
            self._entry["tokens"] += array.size
        self._entry["documents"] += 1

    def close(self) -> dict[str, Any]:
        """Finish the last shard; return this split's index entry (shards written here)."""
        self._close_current()
        return make_split_entry(self.shards)

    def abort(self) -> None:
        """Drop the shard being written (its partial file), e.g. after an error."""
        if self._writer is not None:
            self._writer.abort()
            partial_path(self.out_dir, self._entry["name"]).unlink(missing_ok=True)
            self._writer = None

    def _full(self, incoming: int) -> bool:
        if self.docs_per_shard is not None and self._entry["documents"] >= self.docs_per_shard:
            return True
        return archive_bytes(self._writer.members_bytes + incoming) > self.shard_bytes

    def _open_next(self) -> None:
        name = shard_name(self.split, self.next_index, self.unit)
        self.next_index += 1
        self._writer = TarShardWriter(partial_path(self.out_dir, name))
        self._entry = {"name": name, "documents": 0, "tokens": 0}

    def _close_current(self) -> None:
        if self._writer is None:
            return
        size, digest = self._writer.close()
        name = self._entry["name"]
        os.replace(partial_path(self.out_dir, name), self.out_dir / name)
        entry = {**self._entry, "bytes": size, "sha256": digest}
        self.shards.append(entry)
        self._writer = None
        if self.on_shard is not None:
            self.on_shard(entry)
