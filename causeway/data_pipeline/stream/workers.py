"""The loops behind `DataStream`: a rank's readers in this process, or in DataLoader workers.

Every batch takes `spec.rows` rows from each of the rank's readers, in reader order. With
DataLoader workers, worker w runs the readers k with k mod workers == w and hands back, per
batch, the rows of its readers; the main process puts them in reader order, so the batches
do not depend on the number of workers.

Both loops update a `Cursor` and hold no reference to the DataStream itself: a stream that is
dropped is freed at once, and its generator's `finally` stops the worker processes right away
instead of in a later garbage collection (where DataLoader's shutdown waits seconds per worker).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from causeway.data_pipeline.packing.arrays import Batch, decoder_batch, seq2seq_batch, to_torch
from causeway.data_pipeline.packing.rows import Placement
from causeway.data_pipeline.stream.reader import Reader, ReaderState, StreamSpec

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
    spec: StreamSpec, cursor: Cursor, limit: int | None, workers: int, prefetch: int
) -> Iterator[Batch]:
    """The same batches, the readers spread over DataLoader worker processes (at most one
    worker per reader)."""
    cursor.close_readers()
    workers = min(workers, len(cursor.states))
    dataset = ReaderGroup(spec, cursor.states)
    # Workers ignore stop signals: the trainer stops them after its stop checkpoint.
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_as_is,
                        prefetch_factor=prefetch, worker_init_fn=_ignore_stop_signals)  # fmt: skip
    iterator = iter(loader)
    try:
        while limit is None or cursor.batches < limit:
            items = [next(iterator) for _ in range(workers)]  # one per worker, in order
            for slots, _, states, _ in items:
                for slot, state in zip(slots, states, strict=True):
                    cursor.states[slot] = state
            if limit is None and all(dry for *_, dry in items):
                return
            cursor.batches += 1
            yield to_torch(join_rows(spec, [(slots, arrays) for slots, arrays, *_ in items]))
    finally:
        del iterator


class ReaderGroup(IterableDataset):
    """The readers of one DataLoader worker: worker w runs the rank's readers k with
    k mod workers == w and yields, per batch, (slots, their rows, their states, all dry)."""

    def __init__(self, spec: StreamSpec, states: list[ReaderState]) -> None:
        self.spec, self.states = spec, states

    def __iter__(self) -> Iterator[tuple[list[int], dict, list[ReaderState], bool]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slots = list(range(worker, len(self.states), workers))
        first = self.spec.local_readers.start
        readers = [Reader(self.spec, first + k, self.states[k]) for k in slots]
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


def _ignore_stop_signals(worker_id: int) -> None:
    """A stop signal (scancel's SIGTERM reaches every process of a Slurm step) must not
    kill a worker: the trainer reads on until its stop checkpoint, then closes them."""
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_IGN)


def _as_is(item: Any) -> Any:
    return item
