"""Writing token shards in the webdataset tar format.

One sample per document: `__key__` is the zero-padded document number and `tokens.u16` (or
`.u32` for vocabularies over 65536) holds the raw little-endian ids. Pair data (mtf) stores
`inputs.u16` and `targets.u16` instead. Shards are written under a temporary name and renamed
when complete, and tar headers carry a fixed mtime, so the same input gives identical bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from webdataset import TarWriter

KEY_DIGITS = 9
FIELDS = ("tokens", "inputs", "targets")


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


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


class SplitWriter:
    """Writes one split's samples into shards of at most `docs_per_shard` documents each and
    keeps the per-shard document and token counts for the index."""

    def __init__(self, out_dir: Path, split: str, dtype: np.dtype, docs_per_shard: int) -> None:
        if docs_per_shard < 1:
            raise ValueError(f"docs_per_shard must be >= 1, got {docs_per_shard}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.dtype = np.dtype(dtype)
        self.docs_per_shard = docs_per_shard
        self.shards: list[dict[str, Any]] = []
        self._writer: TarWriter | None = None
        self._stream: Any = None

    def write(self, number: int, **fields: Sequence[int]) -> None:
        """Write document `number`; `fields` is `tokens=...` or `inputs=..., targets=...`."""
        unknown = set(fields) - set(FIELDS)
        if unknown or not fields:
            raise ValueError(f"sample fields must be among {FIELDS}, got {sorted(fields)}")
        if self._writer is None or self.shards[-1]["documents"] >= self.docs_per_shard:
            self._open_next()
        sample: dict[str, Any] = {"__key__": document_key(number)}
        num_tokens = 0
        for name, ids in fields.items():
            array = np.asarray(ids, dtype=self.dtype)
            sample[f"{name}.{extension(self.dtype)}"] = array.tobytes()
            num_tokens += array.size
        assert self._writer is not None
        self._writer.write(sample)
        self.shards[-1]["documents"] += 1
        self.shards[-1]["tokens"] += num_tokens

    def close(self) -> dict[str, Any]:
        """Finish the last shard; return this split's index entry."""
        self._close_current()
        return {
            "shards": self.shards,
            "documents": sum(s["documents"] for s in self.shards),
            "tokens": sum(s["tokens"] for s in self.shards),
        }

    def _open_next(self) -> None:
        self._close_current()
        name = shard_name(self.split, len(self.shards))
        self._stream = open(self._temp_path(name), "wb")  # noqa: SIM115 (closed in _close_current)
        self._writer = TarWriter(self._stream, encoder=False, mtime=0.0)
        self.shards.append({"name": name, "documents": 0, "tokens": 0})

    def _close_current(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._stream.close()
        name = self.shards[-1]["name"]
        os.replace(self._temp_path(name), self.out_dir / name)
        self._writer = self._stream = None

    def _temp_path(self, name: str) -> Path:
        return self.out_dir / f".{name}.{os.getpid()}.partial"
