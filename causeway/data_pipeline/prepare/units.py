"""One unit of preparation work: one input file, tokenized and written to its own shards.

Units are independent (their own shard names `SPLIT-UNIT-SHARD.tar`, their own split draws
seeded by (seed, unit), a global document numbering fixed beforehand by counting), so they run
in parallel processes and give the same bytes in any order and with any number of processes.
A unit resumes by re-reading its input (cheap), drawing the same splits, and tokenizing only
the documents that its finished shards do not hold.

Bad records (`inputs.py`) are skipped by the counting pass and the units alike, so the
numbering agrees; `BadInputs` counts them, logs the first few of each file on the
"causeway.data" logger and fails once more than `max_bad` were seen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from causeway.data_pipeline.prepare.inputs import OnBad, Record, iter_records
from causeway.data_pipeline.prepare.progress import load_unit, save_unit
from causeway.data_pipeline.shards.writer import SplitWriter
from causeway.data_pipeline.tokenizer import Tokenizer

ENCODE_BATCH = 1000
SPLITS = ("train", "val")
LOGGED_PER_FILE = 20
_TOKENIZERS: dict[str, Tokenizer] = {}
logger = logging.getLogger("causeway.data")


class BadInputs:
    """The bad records of one input file: counted, the first `LOGGED_PER_FILE` logged (when
    `log`), an error once `before` (bad records of earlier files) plus this file's exceed
    `limit` (None: no limit)."""

    def __init__(self, path: str, limit: int | None, before: int = 0, log: bool = True) -> None:
        self.path, self.limit, self.before, self.log = path, limit, before, log
        self.count = 0
        self.first: str | None = None

    def __call__(self, where: str, reason: str) -> None:
        self.count += 1
        self.first = self.first or f"{where}: {reason}"
        total = self.before + self.count
        if self.limit is not None and total > self.limit:
            raise ValueError(
                f"{where}: {reason} [bad input {total}; max_bad (--max-bad) allows {self.limit}]"
            )
        if self.log and self.count <= LOGGED_PER_FILE:
            logger.warning("skipping bad input %s: %s", where, reason)
            if self.count == LOGGED_PER_FILE:
                logger.warning("%s: further bad inputs of this file are counted, not logged",
                               self.path)  # fmt: skip


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
    max_bad: int | None = None
    log_bad: bool = True


@dataclass(frozen=True)
class Unit:
    number: int
    path: str
    first_document: int
    val_file: bool


def init_worker(threads: int) -> None:
    """Process-pool initializer: size the tokenizer's thread pool to this process's share."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)


def count_documents(path: str, fields: tuple[str, ...], on_bad: OnBad | None = None) -> int:
    """Documents `path` contributes (empty texts are skipped; pairs never are; bad records go
    to `on_bad`, or are an error without it)."""
    return sum(1 for _ in _documents(path, fields, on_bad))


def _documents(path: str, fields: tuple[str, ...], on_bad: OnBad | None) -> Iterator[Record]:
    pairs = len(fields) > 1
    return (rec for _, rec in iter_records(path, fields, on_bad) if pairs or rec[0])


def run_unit(unit: Unit, settings: UnitSettings) -> dict[str, Any]:
    """Write (or finish writing) one unit; returns {"splits": its shard entries per split,
    "bad": its bad records, "first_bad": the first as "location: reason" or None}."""
    out_dir, progress = Path(settings.out_dir), Path(settings.progress_dir)
    record = load_unit(progress, unit.number, out_dir, SPLITS)
    if record["done"]:
        return _result(record)
    writers = {split: _writer(unit, settings, record, split) for split in SPLITS}
    skip = {s: sum(e["documents"] for e in record["splits"][s]) for s in SPLITS}
    bad = BadInputs(unit.path, settings.max_bad, log=settings.log_bad)
    try:
        for batch in _batches(unit, settings, skip, bad):
            _write_batch(writers, batch, settings, _tokenizer(settings))
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    record.update(done=True, bad=bad.count, first_bad=bad.first)
    save_unit(progress, unit.number, record)
    return _result(record)


def _result(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in ("splits", "bad", "first_bad")}


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
    unit: Unit, settings: UnitSettings, skip: dict[str, int], bad: BadInputs
) -> Iterator[list[tuple[int, str, Record]]]:
    """Batches of (document number, split, record) still to be written."""
    rng = np.random.default_rng([settings.seed, unit.number])
    seen = dict.fromkeys(SPLITS, 0)

    def numbered() -> Iterator[tuple[int, str, Record]]:
        for offset, record in enumerate(_documents(unit.path, settings.fields, bad)):
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
