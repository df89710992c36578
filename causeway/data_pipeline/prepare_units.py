"""One unit of preparation work: one input file, tokenized and written to its own shards.

Units are independent (their own shard names `SPLIT-UNIT-SHARD.tar`, their own split draws
seeded by (seed, unit), a global document numbering fixed beforehand by counting), so they run
in parallel processes and give the same bytes in any order and with any number of processes.
A unit resumes by re-reading its input (cheap), drawing the same splits, and tokenizing only
the documents that its finished shards do not hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from causeway.data_pipeline.prepare_progress import load_unit, save_unit
from causeway.data_pipeline.shards import SplitWriter
from causeway.data_pipeline.text_sources import Record, iter_records
from causeway.data_pipeline.tokenizer import Tokenizer

ENCODE_BATCH = 1000
SPLITS = ("train", "val")
_TOKENIZERS: dict[str, Tokenizer] = {}


@dataclass(frozen=True)
class UnitSettings:
    """What every unit of one preparation shares."""

    out_dir: str
    progress_dir: str
    tokenizer_path: str
    num_sentinels: int
    fields: tuple[str, ...]
    dtype: str
    shard_bytes: int
    docs_per_shard: int | None
    val_fraction: float
    seed: int


@dataclass(frozen=True)
class Unit:
    number: int
    path: str
    first_document: int
    val_file: bool


def init_worker(threads: int) -> None:
    """Process-pool initializer: size the tokenizer's thread pool to this process's share."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)


def count_documents(path: str, fields: tuple[str, ...]) -> int:
    """Documents `path` contributes (empty texts are skipped; pairs never are)."""
    return sum(1 for _ in _documents(path, fields))


def _documents(path: str, fields: tuple[str, ...]) -> Iterator[Record]:
    pairs = len(fields) > 1
    return (rec for _, rec in iter_records(path, fields) if pairs or rec[0])


def run_unit(unit: Unit, settings: UnitSettings) -> dict[str, list[dict[str, Any]]]:
    """Write (or finish writing) one unit; returns its shard entries per split."""
    out_dir, progress = Path(settings.out_dir), Path(settings.progress_dir)
    record = load_unit(progress, unit.number, out_dir, SPLITS)
    if record["done"]:
        return record["splits"]
    writers = {split: _writer(unit, settings, record, split) for split in SPLITS}
    skip = {s: sum(e["documents"] for e in record["splits"][s]) for s in SPLITS}
    try:
        for batch in _batches(unit, settings, skip):
            _write_batch(writers, batch, settings, _tokenizer(settings))
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    record["done"] = True
    save_unit(progress, unit.number, record)
    return record["splits"]


def _writer(unit: Unit, settings: UnitSettings, record: dict, split: str) -> SplitWriter:
    finished = record["splits"][split]

    def on_shard(entry: dict[str, Any]) -> None:
        finished.append(entry)
        save_unit(Path(settings.progress_dir), unit.number, {**record, "done": False})

    return SplitWriter(
        Path(settings.out_dir), split, np.dtype(settings.dtype), settings.docs_per_shard,
        settings.shard_bytes, unit=unit.number, first_shard=len(finished), on_shard=on_shard,
    )  # fmt: skip


def _batches(
    unit: Unit, settings: UnitSettings, skip: dict[str, int]
) -> Iterator[list[tuple[int, str, Record]]]:
    """Batches of (document number, split, record) still to be written."""
    rng = np.random.default_rng([settings.seed, unit.number])
    seen = dict.fromkeys(SPLITS, 0)

    def numbered() -> Iterator[tuple[int, str, Record]]:
        for offset, record in enumerate(_documents(unit.path, settings.fields)):
            split = "val" if unit.val_file else "train"
            if not unit.val_file and settings.val_fraction and rng.random() < settings.val_fraction:
                split = "val"
            seen[split] += 1
            if seen[split] > skip[split]:
                yield unit.first_document + offset, split, record

    items = numbered()
    while batch := list(islice(items, ENCODE_BATCH)):
        yield batch


def _write_batch(
    writers: dict[str, SplitWriter],
    batch: list[tuple[int, str, Record]],
    settings: UnitSettings,
    tokenizer: Tokenizer,
) -> None:
    columns = list(zip(*(record for _, _, record in batch), strict=True))
    encoded = [tokenizer.encode_batch(list(column)) for column in columns]
    eos = tokenizer.eos_id
    pairs = len(settings.fields) > 1
    for (number, split, _), ids in zip(batch, zip(*encoded, strict=True), strict=True):
        if pairs:
            writers[split].write(number, inputs=ids[0], targets=ids[1] + [eos])
        else:
            writers[split].write(number, tokens=ids[0] + [eos])


def _tokenizer(settings: UnitSettings) -> Tokenizer:
    key = settings.tokenizer_path
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = Tokenizer.from_file(key, num_sentinels=settings.num_sentinels)
    return _TOKENIZERS[key]


def run_units(units: list[Unit], settings: UnitSettings, num_proc: int) -> list[dict]:
    """All units, in `num_proc` processes (in this process when 1); results in unit order."""
    if num_proc <= 1 or len(units) <= 1:
        return [run_unit(unit, settings) for unit in units]
    return _in_pool(run_unit, [(u, settings) for u in units], num_proc)


def _in_pool(function: Any, arguments: list[tuple], num_proc: int) -> list:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(num_proc, len(arguments))
    threads = max(1, (os.cpu_count() or 1) // workers)
    # fork: no re-import of __main__ (spawn would need an `if __name__ == "__main__"` guard in
    # every calling script). A child sizes its own tokenizer thread pool in init_worker unless
    # the parent had already used one (then tokenizers runs the child single-threaded).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, context, init_worker, (threads,)) as pool:
        futures = [pool.submit(function, *args) for args in arguments]
        try:
            return [f.result() for f in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
