"""Data for causeway, by stage: text -> token shards -> documents -> examples -> packed batches.

- `prepare/`: input files -> tokenized tar shards + index.json (parallel, resumable).
- `shards/`: the shard format, index.json, URLs, datasets and mixtures (`Source`), inspection.
- `objectives/`: the pretraining objectives applied to blocks of documents, and their rules.
- `packing/`: examples into rows (split in order, or best fit) and rows into batch arrays.
- `stream/`: `DataStream`, the deterministic, resumable batch stream, read by share.
- `tokenizer.py`: the BPE tokenizer with sentinels.

The public API is importable from here (`from causeway.data_pipeline import DataStream`);
names load lazily, so `import causeway.data_pipeline.tokenizer` does not pull in torch. See
docs/data.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "DataStream": "causeway.data_pipeline.stream.stream",
    "default_readers": "causeway.data_pipeline.stream.stream",
    "merge_states": "causeway.data_pipeline.stream.state",
    "LoaderWorkerDied": "causeway.data_pipeline.stream.processes",
    "Source": "causeway.data_pipeline.shards.sources",
    "prepare_files": "causeway.data_pipeline.prepare.prepare",
    "prepare_builtin": "causeway.data_pipeline.prepare.prepare",
    "ensure_builtin": "causeway.data_pipeline.prepare.prepare",
    "inspect_dataset": "causeway.data_pipeline.shards.inspection",
    "Tokenizer": "causeway.data_pipeline.tokenizer",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'causeway.data_pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
