"""`causeway data prepare`: text -> token shards + tokenizer.json + index.json.

Documents are tokenized in batches (the tokenizers library encodes a batch in parallel), get
EOS appended, and are assigned to train or val by a seeded draw per document, so the split is
deterministic and needs no second pass. index.json is removed first and written last: an
interrupted prepare leaves a directory that every reader recognises as incomplete.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice, repeat
from pathlib import Path

import numpy as np

from causeway.data_pipeline.corpus import builtin_documents
from causeway.data_pipeline.index import INDEX_VERSION, index_path, remove_index, write_index
from causeway.data_pipeline.shards import SplitWriter, dtype_name, token_dtype
from causeway.data_pipeline.text_sources import Record, iter_records
from causeway.data_pipeline.tokenizer import DEFAULT_NUM_SENTINELS, Tokenizer, train_bpe

TOKENIZER_NAME = "tokenizer.json"
LOCK_NAME = ".prepare.lock"
ENCODE_BATCH = 1000
SPLITS = ("train", "val")


class DatasetWriter:
    """Owns one output directory while it is being written; `finish` writes the index."""

    def __init__(
        self, out_dir: Path, tokenizer: Tokenizer, docs_per_shard: int, pairs: bool = False
    ) -> None:
        self.out_dir = out_dir
        self.tokenizer = tokenizer
        self.pairs = pairs
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.splits = {s: SplitWriter(out_dir, s, self.dtype, docs_per_shard) for s in SPLITS}

    def write_batch(self, numbered: Sequence[tuple[int, str, Record]]) -> None:
        """Tokenize a batch of (document number, split, record) and write each document."""
        columns = list(zip(*(record for _, _, record in numbered), strict=True))
        encoded = [self.tokenizer.encode_batch(list(column)) for column in columns]
        eos = self.tokenizer.eos_id
        for (number, split, _), ids in zip(numbered, zip(*encoded, strict=True), strict=True):
            if self.pairs:
                self.splits[split].write(number, inputs=ids[0], targets=ids[1] + [eos])
            else:
                self.splits[split].write(number, tokens=ids[0] + [eos])

    def finish(self) -> Path:
        index = {
            "version": INDEX_VERSION,
            "tokenizer": TOKENIZER_NAME,
            "vocab_size": self.tokenizer.vocab_size,
            "dtype": dtype_name(self.dtype),
            "format": "pairs" if self.pairs else "tokens",
            "splits": {name: writer.close() for name, writer in self.splits.items()},
        }
        write_index(self.out_dir, index)
        return self.out_dir


def _start(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_index(out_dir)
    return out_dir


def assign_splits(items: Iterable, val_fraction: float, seed: int) -> Iterator[str]:
    """ "train" or "val" for each item, from one seeded draw per item (stream-friendly)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    for _ in items:
        yield "val" if rng.random() < val_fraction else "train"


def _write_all(writer: DatasetWriter, items: Iterable[tuple[int, str, Record]]) -> Path:
    items = iter(items)
    while batch := list(islice(items, ENCODE_BATCH)):
        writer.write_batch(batch)
    return writer.finish()


def prepare_builtin(
    out_dir: str | Path,
    vocab_size: int = 4096,
    val_fraction: float = 0.02,
    docs_per_shard: int = 2000,
    seed: int = 0,
) -> Path:
    """Prepare the stdlib-docstring corpus: train a BPE on its train split, tokenize, shard."""
    out_dir = _start(out_dir)
    documents = builtin_documents()
    splits = list(assign_splits(documents, val_fraction, seed))
    train_texts = (doc for doc, split in zip(documents, splits, strict=True) if split == "train")
    tokenizer = train_bpe(train_texts, vocab_size, out_dir / TOKENIZER_NAME)
    writer = DatasetWriter(out_dir, tokenizer, docs_per_shard)
    items = (
        (n, split, (doc,)) for n, (doc, split) in enumerate(zip(documents, splits, strict=True))
    )
    return _write_all(writer, items)


def ensure_builtin(data_dir: str | Path, **kwargs) -> Path:
    """The builtin dataset at `data_dir`, prepared only if no complete one is there.

    Safe to call from every rank at once: an exclusive lock on `data_dir/.prepare.lock` lets
    one process build while the others wait and then find the finished index.
    """
    data_dir = Path(data_dir)
    if index_path(data_dir).is_file():
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(data_dir / LOCK_NAME):
        if index_path(data_dir).is_file():
            return data_dir
        return prepare_builtin(data_dir, **kwargs)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an advisory POSIX lock on `path` (created if needed) for the `with` block."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_files(
    files: Sequence[str | Path],
    tokenizer_path: str | Path,
    out_dir: str | Path,
    text_field: str = "text",
    val_fraction: float = 0.0,
    val_files: Sequence[str | Path] | None = None,
    docs_per_shard: int = 2000,
    seed: int = 0,
    pair_fields: tuple[str, str] | None = None,
    num_sentinels: int = DEFAULT_NUM_SENTINELS,
) -> Path:
    """Tokenize .jsonl / .txt / .parquet files with an existing tokenizer.json into shards.

    Validation data comes either from `val_files` or from a seeded `val_fraction` of the
    documents of `files`, not both. With `pair_fields=("inputs", "targets")` each record is an
    mtf pair (jsonl/parquet only); EOS is appended to the targets. Empty texts are skipped.
    The tokenizer is saved into `out_dir` with any reserved tokens it lacked added.
    """
    if val_files and val_fraction:
        raise ValueError("give either val_files or val_fraction, not both")
    if not files:
        raise ValueError("prepare_files needs at least one input file")
    for path in [*files, *(val_files or [])]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file not found: {path}")
    tokenizer = Tokenizer.from_file(tokenizer_path, num_sentinels=num_sentinels)
    out_dir = _start(out_dir)
    tokenizer.save(out_dir / TOKENIZER_NAME)
    fields = tuple(pair_fields) if pair_fields else (text_field,)
    writer = DatasetWriter(out_dir, tokenizer, docs_per_shard, pairs=pair_fields is not None)
    items = _numbered_records(files, val_files or [], fields, val_fraction, seed)
    return _write_all(writer, items)


def _numbered_records(
    files: Sequence[str | Path],
    val_files: Sequence[str | Path],
    fields: tuple[str, ...],
    val_fraction: float,
    seed: int,
) -> Iterator[tuple[int, str, Record]]:
    """(document number, split, record) over all files, numbering documents globally."""
    pairs = len(fields) > 1
    train = (rec for path in files for _, rec in iter_records(path, fields))
    train = (rec for rec in train if pairs or rec[0])
    count = 0
    for record, split in zip(train, assign_splits(repeat(None), val_fraction, seed), strict=False):
        yield count, split, record
        count += 1
    for path in val_files:
        for _, record in iter_records(path, fields):
            if pairs or record[0]:
                yield count, "val", record
                count += 1
