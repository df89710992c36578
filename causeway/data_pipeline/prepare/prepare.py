"""`causeway data prepare`: text -> token shards + tokenizer.json + index.json.

Inputs (files, directories, globs, brace patterns; JSON lines plain or gzip/zstd compressed,
text, parquet, webdataset tars: `inputs.py`) are prepared in parallel processes, one
input file per unit of work (`units.py`); each process tokenizes with the tokenizer's
batch encoding and writes shards of about `shard_bytes` (default 256 MiB). Documents get EOS
appended and are assigned to train or val by a seeded draw per document, so the split is
deterministic and needs no second pass. Bad records are skipped and counted ("bad_inputs"
in index.json) up to `max_bad`. index.json is removed first and written last: an
interrupted prepare leaves a directory that every reader recognises as incomplete, and
re-running it skips the shards it finished (`progress.py`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from causeway.data_pipeline.prepare.corpus import builtin_documents
from causeway.data_pipeline.prepare.inputs import check_input
from causeway.data_pipeline.prepare.patterns import expand_inputs
from causeway.data_pipeline.prepare.progress import open_progress, read_json
from causeway.data_pipeline.prepare.units import (
    ENCODE_BATCH,
    SPLITS,
    BadInputs,
    Unit,
    UnitSettings,
    count_documents,
    run_units,
)
from causeway.data_pipeline.shards.index import (
    INDEX_VERSION,
    index_path,
    make_split_entry,
    remove_index,
    write_index,
    write_json,
)
from causeway.data_pipeline.shards.writer import (
    DEFAULT_SHARD_BYTES,
    SplitWriter,
    dtype_name,
    token_dtype,
)
from causeway.data_pipeline.tokenizer import DEFAULT_NUM_SENTINELS, Tokenizer, train_bpe

TOKENIZER_NAME = "tokenizer.json"
LOCK_NAME = ".prepare.lock"
logger = logging.getLogger("causeway.data")
__all__ = [
    "DEFAULT_SHARD_BYTES",
    "ENCODE_BATCH",
    "LOCK_NAME",
    "TOKENIZER_NAME",
    "assign_splits",
    "ensure_builtin",
    "exclusive_lock",
    "parse_size",
    "prepare_builtin",
    "prepare_files",
]


def index_document(
    tokenizer: Tokenizer, dtype: np.dtype, pairs: bool, splits: dict[str, Any]
) -> dict[str, Any]:
    return {
        "version": INDEX_VERSION,
        "tokenizer": TOKENIZER_NAME,
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype_name(dtype),
        "format": "pairs" if pairs else "tokens",
        "splits": splits,
    }


def _start(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_index(out_dir)
    return out_dir


def assign_splits(items: Iterable, val_fraction: float, seed: int) -> Iterator[str]:
    """ "train" or "val" for each item, from one seeded draw per item (stream-friendly)."""
    _check_fraction(val_fraction)
    rng = np.random.default_rng(seed)
    for _ in items:
        yield "val" if rng.random() < val_fraction else "train"


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def parse_size(text: str | int) -> int:
    """Bytes from "256MiB", "1GiB", "500MB", "4096" (for --shard-size)."""
    if isinstance(text, int):
        return text
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9,
             "k": 2**10, "m": 2**20, "g": 2**30, "b": 1, "": 1}  # fmt: skip
    value = text.strip().lower()
    number = value.rstrip("kmgib")
    suffix = value[len(number) :]
    try:
        return int(float(number) * units[suffix])
    except (KeyError, ValueError):
        raise ValueError(f"cannot read a size from {text!r} (e.g. 256MiB, 1GiB, 4096)") from None


def prepare_builtin(
    out_dir: str | Path,
    vocab_size: int = 4096,
    val_fraction: float = 0.02,
    docs_per_shard: int | None = 2000,
    seed: int = 0,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Prepare the stdlib-docstring corpus: train a BPE on its train split, tokenize, shard."""
    out_dir = _start(out_dir)
    documents = builtin_documents()
    splits = list(assign_splits(documents, val_fraction, seed))
    train_texts = (doc for doc, split in zip(documents, splits, strict=True) if split == "train")
    tokenizer = train_bpe(train_texts, vocab_size, out_dir / TOKENIZER_NAME)
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {s: SplitWriter(out_dir, s, dtype, docs_per_shard, shard_bytes) for s in SPLITS}
    for start in range(0, len(documents), ENCODE_BATCH):
        encoded = tokenizer.encode_batch(documents[start : start + ENCODE_BATCH])
        for number, ids in enumerate(encoded, start=start):
            writers[splits[number]].write(number, tokens=ids + [tokenizer.eos_id])
    entries = {name: writer.close() for name, writer in writers.items()}
    write_index(out_dir, index_document(tokenizer, dtype, False, entries))
    return out_dir


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
    docs_per_shard: int | None = None,
    seed: int = 0,
    pair_fields: tuple[str, str] | None = None,
    num_sentinels: int = DEFAULT_NUM_SENTINELS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    num_proc: int | None = None,
    max_bad: int | None = None,
) -> Path:
    """Tokenize input files with an existing tokenizer.json into shards.

    `files` and `val_files` are files, directories, globs or brace patterns (`expand_inputs`)
    of JSON lines (`.jsonl`, `.json`, gzip or zstd compressed: `.jsonl.gz`, `.json.gz`,
    `.jsonl.zst`, ...), `.txt`, `.parquet` or webdataset `.tar` files (`inputs.py`).
    Validation data comes either from `val_files` or from a seeded `val_fraction` of the
    documents of `files`, not both. With `pair_fields=("inputs", "targets")` each record is an
    mtf pair (jsonl/parquet only); EOS is appended to the targets. Empty texts are skipped.
    The tokenizer is saved into `out_dir` with any reserved tokens it lacked added. Files are
    prepared in `num_proc` processes (default: one per CPU, at most one per file); re-running
    after an interruption with the same arguments keeps the shards already finished.

    A bad record (invalid JSON or UTF-8, a missing or non-string field; `inputs.py`) is
    logged with its file and line (or member), skipped and counted: index.json's
    "bad_inputs". Once more than `max_bad` were seen preparation fails naming the last one;
    None (the default, as for the CLI's `--max-bad`) allows any number; 0 makes every bad
    record an error.
    """
    if val_files and val_fraction:
        raise ValueError("give either val_files or val_fraction, not both")
    if not files:
        raise ValueError("prepare_files needs at least one input file")
    if max_bad is not None and max_bad < 0:
        raise ValueError(f"max_bad must be >= 0 or None (no limit), got {max_bad}")
    _check_fraction(val_fraction)
    train_files = expand_inputs(files)
    inputs = [*train_files, *expand_inputs(val_files or [])]
    fields = tuple(pair_fields) if pair_fields else (text_field,)
    for path in inputs:
        check_input(path, fields)
    tokenizer = Tokenizer.from_file(tokenizer_path, num_sentinels=num_sentinels)
    out_dir = _start(out_dir)
    tokenizer.save(out_dir / TOKENIZER_NAME)
    dtype = token_dtype(tokenizer.vocab_size)
    paths = [str(Path(p).resolve()) for p in inputs]
    num_train = len(train_files)
    settings = _settings(paths, num_train, out_dir, fields, val_fraction, seed, shard_bytes,
                         docs_per_shard, num_sentinels)  # fmt: skip
    progress = open_progress(out_dir, settings)
    num_proc = max(1, min(num_proc or os.cpu_count() or 1, len(paths)))
    counts, counted_now = _counts(progress, paths, fields, max_bad)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
    units = [Unit(i, p, firsts[i], i >= num_train) for i, p in enumerate(paths)]
    unit_settings = UnitSettings(
        str(out_dir), str(progress), str(out_dir / TOKENIZER_NAME), num_sentinels, fields,
        dtype_name(dtype), shard_bytes, docs_per_shard, val_fraction, seed, max_bad,
        log_bad=not counted_now,  # the counting pass has logged them
    )  # fmt: skip
    results = run_units(units, unit_settings, num_proc)
    splits = {s: make_split_entry([e for r in results for e in r["splits"][s]]) for s in SPLITS}
    bad = _report_bad(paths, results)
    if bad and not any(splits[s]["documents"] for s in SPLITS):
        first = next(r["first_bad"] for r in results if r["bad"])
        raise _no_documents(bad, first)
    index = index_document(tokenizer, dtype, pair_fields is not None, splits)
    write_index(out_dir, {**index, "bad_inputs": bad})
    return out_dir


def _settings(
    paths: list[str], num_train: int, out_dir: Path, fields: tuple[str, ...], *rest: Any
) -> dict[str, Any]:
    """Everything that determines the output bytes: a re-run resumes only if it is unchanged."""
    stats = [os.stat(p) for p in paths]
    tokenizer_hash = hashlib.sha256((out_dir / TOKENIZER_NAME).read_bytes()).hexdigest()
    names = ("val_fraction", "seed", "shard_bytes", "docs_per_shard", "num_sentinels")
    return {
        "inputs": [
            [p, s.st_size, s.st_mtime_ns, i >= num_train]
            for i, (p, s) in enumerate(zip(paths, stats, strict=True))
        ],  # fmt: skip
        "fields": list(fields),
        "tokenizer_sha256": tokenizer_hash,
        **dict(zip(names, rest, strict=True)),
    }


def _counts(
    progress: Path, paths: list[str], fields: tuple[str, ...], max_bad: int | None
) -> tuple[list[int], bool]:
    """Documents per input file (fixes the global numbering; parsing without tokenizing costs
    a few percent of the preparation), and whether they were counted now (not cached from an
    earlier run). The counting pass logs bad records and enforces `max_bad` over all inputs,
    in input order, before anything is tokenized; counts are cached for re-runs."""
    if len(paths) == 1:
        return [0], False  # nothing to number: the unit itself counts and checks
    cached = read_json(progress / "counts.json")
    if _cached_counts_fit(cached, len(paths), max_bad):
        return cached["documents"], False
    documents: list[int] = []
    bad: list[int] = []
    first = None
    for path in paths:
        tally = BadInputs(path, max_bad, before=sum(bad))
        documents.append(count_documents(path, fields, tally))
        bad.append(tally.count)
        first = first or tally.first
    if sum(bad) and not sum(documents):
        raise _no_documents(sum(bad), first)
    write_json(progress / "counts.json", {"documents": documents, "bad": bad})
    return documents, True


def _cached_counts_fit(cached: Any, count: int, max_bad: int | None) -> bool:
    """Counts from an earlier run, usable if they are for as many inputs and within max_bad
    (else counting again names the bad record past the limit)."""
    if not isinstance(cached, dict):
        return False
    documents, bad = cached.get("documents"), cached.get("bad")
    if not (isinstance(documents, list) and isinstance(bad, list)):
        return False
    fits = max_bad is None or sum(bad) <= max_bad
    return len(documents) == len(bad) == count and fits


def _no_documents(bad: int, first: str | None) -> ValueError:
    return ValueError(
        f"nothing to prepare: all {bad} records of the inputs were bad (the first: {first}); "
        "check --text-field / --pair-fields"
    )


def _report_bad(paths: list[str], results: list[dict[str, Any]]) -> int:
    """Log how many bad records each input had; returns their total."""
    bad = [(path, r["bad"], r["splits"]) for path, r in zip(paths, results, strict=True)]
    for path, count, splits in bad:
        if count and not any(e["documents"] for s in SPLITS for e in splits[s]):
            logger.warning("%s: every one of its %d records was bad", path, count)
    total = sum(count for _, count, _ in bad)
    if total:
        named = [f"{Path(path).name}: {count}" for path, count, _ in bad if count]
        more = f", and {len(named) - 10} more files" if len(named) > 10 else ""
        logger.warning("skipped %d bad input records (%s%s)", total, ", ".join(named[:10]), more)
    return total
