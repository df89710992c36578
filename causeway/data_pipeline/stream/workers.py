"""The loops behind `DataStream`: a rank's readers in this process, or in worker processes.

Every batch takes `spec.rows` rows from each of the rank's readers, in reader order. With
workers, worker w runs the readers k with k mod workers == w and hands back, per batch, the
rows of its readers and their states; the main process puts them in reader order, so the
batches do not depend on the number of workers. A worker that dies is restarted from the
states of its readers at the last batch (processes.py watches the workers).

Both loops update a `Cursor` and hold no reference to the DataStream itself: a stream that is
dropped is freed at once, and its generator's `finally` stops the worker processes right away
instead of in a later garbage collection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from causeway.data_pipeline.packing.arrays import Batch, decoder_batch, seq2seq_batch, to_torch
from causeway.data_pipeline.packing.rows import Placement
from causeway.data_pipeline.stream.processes import (
    Death,
    LoaderWorkerDied,
    WorkerDied,
    WorkerProcess,
    board_size,
    watch_walks,
)
from causeway.data_pipeline.stream.reader import Reader, ReaderState, StreamSpec

logger = logging.getLogger("causeway.data")

# Deaths of a worker in a row, without a batch in between, that are restarted; one more fails.
WORKER_RESTARTS = 3

# Arrays whose second dimension is the number of segments: padded when rows are joined.
_SEGMENT_WIDE = {"prefix_lengths": 0, "provenance": -1}


@dataclass
class Cursor:
    """Where a rank's stream stands: its readers' states (or the live readers), batches."""

    states: list[ReaderState]
    batches: int = 0
    readers: list[Reader] | None = None

    def reader_states(self) -> list[ReaderState]:
        return [r.state() for r in self.readers] if self.readers else self.states

    def close_readers(self) -> None:
        if self.readers is not None:
            self.states = self.reader_states()
            for reader in self.readers:
                reader.close()
            self.readers = None


def rows_arrays(spec: StreamSpec, placements: Sequence[list[Placement] | None]) -> dict:
    """The numpy arrays of the rows of several readers (None: a dry reader, padding rows),
    stacked in the order given."""
    rows = spec.rows
    combined = [p.shifted(k * rows) for k, group in enumerate(placements) for p in group or ()]
    count = len(placements) * rows
    if spec.decoder:
        arrays = decoder_batch(combined, count, spec.seq_len, spec.pad_id, spec.max_segments)
    else:
        o = spec.objective
        arrays = seq2seq_batch(combined, count, o.inputs_length, o.targets_length,
                               spec.pad_id, spec.pad_id)  # fmt: skip
    if spec.provenance:
        arrays["provenance"] = provenance(combined, count)
    return arrays


def join_rows(spec: StreamSpec, groups: Sequence[tuple[list[int], dict]]) -> dict:
    """One batch from row groups (reader slots, their arrays), in slot order."""
    chunks: list[tuple[int, dict]] = []
    for slots, arrays in groups:
        for k, slot in enumerate(slots):
            part = slice(k * spec.rows, (k + 1) * spec.rows)
            chunks.append((slot, {key: value[part] for key, value in arrays.items()}))
    chunks.sort(key=lambda chunk: chunk[0])
    out = {}
    for key in chunks[0][1]:
        values = [arrays[key] for _, arrays in chunks]
        if key in _SEGMENT_WIDE:
            width = max(v.shape[1] for v in values)
            values = [_pad_width(v, width, _SEGMENT_WIDE[key]) for v in values]
        out[key] = np.concatenate(values)
    return out


def _pad_width(value: np.ndarray, width: int, fill: int) -> np.ndarray:
    if value.shape[1] == width:
        return value
    pad = [(0, 0), (0, width - value.shape[1])] + [(0, 0)] * (value.ndim - 2)
    return np.pad(value, pad, constant_values=fill)


def empty_batch(spec: StreamSpec) -> Batch:
    """An all-padding batch of the stream's shapes (a finite pass's filler)."""
    return to_torch(rows_arrays(spec, [None] * len(spec.local_readers)))


def local_batches(spec: StreamSpec, cursor: Cursor, limit: int | None) -> Iterator[Batch]:
    """Every batch from all of the rank's readers, in this process."""
    if cursor.readers is None:
        cursor.readers = [Reader(spec, i, s) for i, s in zip(spec.local_readers, cursor.states,
                                                             strict=True)]  # fmt: skip
    readers = cursor.readers
    while limit is None or cursor.batches < limit:
        placements = [reader.next_rows() for reader in readers]
        if limit is None and all(p is None for p in placements):
            return  # one rank, one pass: every reader has run dry
        cursor.batches += 1
        yield to_torch(rows_arrays(spec, placements))


def worker_batches(
    spec: StreamSpec,
    cursor: Cursor,
    limit: int | None,
    workers: int,
    prefetch: int,
    restarts: int = WORKER_RESTARTS,
) -> Iterator[Batch]:
    """The same batches, the readers spread over worker processes (at most one worker per
    reader). A worker that dies is restarted from its readers' state at the last batch given
    (the batches stay exactly those of a run without the fault); after `restarts` deaths in a
    row without a batch in between, `LoaderWorkerDied` names the worker, how it died and the
    shards it was reading."""
    cursor.close_readers()
    workers = min(workers, len(cursor.states))
    size = board_size(spec, len(range(0, len(cursor.states), workers)))

    def start(worker: int) -> WorkerProcess:
        return WorkerProcess(ReaderGroup(spec, cursor.states, worker, workers), worker, size,
                             prefetch)  # fmt: skip

    pool: list[WorkerProcess] = []
    deaths = 0
    try:
        pool += [start(w) for w in range(workers)]
        while limit is None or cursor.batches < limit:
            items = []
            for w in range(workers):  # one item per worker, in order
                while True:
                    try:
                        items.append(pool[w].receive())
                        break
                    except WorkerDied as died:
                        deaths += 1
                        report = death_report(spec, cursor, pool[w], died.death, workers)
                        pool[w].close()
                        if deaths > restarts:
                            raise LoaderWorkerDied(
                                f"{report}; {deaths} deaths in a row without a batch in between "
                                f"(at most {restarts} restarts): giving up at batch "
                                f"{cursor.batches} (the stream's state is still exact); "
                                f"data.num_workers=0 reads in the main process",
                                died.death,
                            ) from None
                        logger.warning("%s; restarted from its readers' state at batch %d "
                                       "(restart %d of at most %d in a row): no document is lost "
                                       "or repeated", report, cursor.batches, deaths,
                                       restarts)  # fmt: skip
                        pool[w] = start(w)
            for slots, _, states, _ in items:
                for slot, state in zip(slots, states, strict=True):
                    cursor.states[slot] = state
            if limit is None and all(dry for *_, dry in items):
                return
            deaths = 0
            cursor.batches += 1
            yield to_torch(join_rows(spec, [(slots, arrays) for slots, arrays, *_ in items]))
    finally:
        for process in pool:
            process.close()


def death_report(
    spec: StreamSpec, cursor: Cursor, process: WorkerProcess, death: Death, workers: int
) -> str:
    """What died and what it was reading: the shard and sample each of its readers' walks
    last wrote on the board (else, the reader's position at the last batch)."""
    first = spec.local_readers.start
    slots = list(range(death.worker, len(cursor.states), workers))
    board = process.reading()
    parts = []
    for k, slot in enumerate(slots):
        for s, data in enumerate(spec.datas):
            shard, sample = board[k * len(spec.datas) + s]
            if shard < 0:
                queue = cursor.states[slot].queues[s]
                if not queue:
                    continue
                shard, sample = queue[0].shard, queue[0].start
            parts.append(f"{data.shards[shard].url} from sample {sample} (reader {first + slot}, "
                         f"dataset {data.name!r})")  # fmt: skip
    reading = "; ".join(parts) or "no shard yet"
    return (f"data worker {death.worker} (pid {death.pid}) of rank {spec.rank} died: "
            f"{death.cause()}; it was reading {reading}")  # fmt: skip


class ReaderGroup:
    """The readers of worker w of `workers`: the rank's readers k with k mod workers == w. It
    yields, per batch, (slots, their rows, their states, all dry). In a worker process the
    walks write what they read on `board` (see processes.py)."""

    board: Any = None

    def __init__(self, spec: StreamSpec, states: list[ReaderState], worker: int = 0,
                 workers: int = 1) -> None:  # fmt: skip
        self.spec, self.worker, self.workers = spec, worker, workers
        self.slots = list(range(worker, len(states), workers))
        self.states = [states[k] for k in self.slots]  # only its own readers travel

    def __iter__(self) -> Iterator[tuple[list[int], dict, list[ReaderState], bool]]:
        slots = self.slots
        first = self.spec.local_readers.start
        readers = [Reader(self.spec, first + k, s) for k, s in zip(slots, self.states,
                                                                   strict=True)]  # fmt: skip
        if self.board is not None:
            watch_walks(readers, self.board)
        try:
            while True:
                placements = [reader.next_rows() for reader in readers]
                arrays = rows_arrays(self.spec, placements)
                dry = all(p is None for p in placements)
                yield slots, arrays, [reader.state() for reader in readers], dry
        finally:
            for reader in readers:
                reader.close()


def provenance(placements: list[Placement], rows: int) -> np.ndarray:
    """[rows, segments + 1, 6]: (source, epoch, shard, sample, chunk, offset) of every
    segment; offset > 0 for the rest of an example split across rows."""
    most = max((int(p.numbers.max()) for p in placements if len(p.numbers)), default=0)
    out = np.full((rows, most + 1, 6), -1, dtype=np.int64)
    for p in placements:
        docs, n = p.examples.docs, len(p.index)
        offset = np.zeros(n, dtype=np.int64)
        offset[:1] = p.skip
        sample, chunk = docs.samples[p.examples.doc[p.index]], p.examples.chunk[p.index]
        values = [np.full(n, docs.source), np.full(n, docs.epoch), np.full(n, docs.shard),
                  sample, chunk, offset]  # fmt: skip
        out[p.rows, p.numbers] = np.stack(values, axis=1)
    return out
