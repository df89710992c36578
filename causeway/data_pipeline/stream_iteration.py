"""The loops behind `DataStream`: lanes in this process, or lanes in DataLoader workers.

Both loops update a `Cursor` (lane states, next lane, batch count) and hold no reference to
the DataStream itself: a stream that is dropped is freed at once, and its generator's `finally`
stops the worker processes right away instead of in a later garbage collection (where
DataLoader's shutdown waits seconds for each worker).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from causeway.data_pipeline.lane import Lane, StreamSpec, provenance
from causeway.data_pipeline.row_packer import Batch, decoder_batch, seq2seq_batch, to_torch


@dataclass
class Cursor:
    """Where a rank's stream stands: lane states (or the live lanes), next lane, batches."""

    states: list[dict]
    next_lane: int = 0
    batches: int = 0
    lanes: list[Lane] | None = None

    def lane_states(self) -> list[dict]:
        return [lane.state() for lane in self.lanes] if self.lanes else self.states

    def close_lanes(self) -> None:
        if self.lanes is not None:
            self.states = self.lane_states()
            for lane in self.lanes:
                lane.close()
            self.lanes = None


def empty_batch(spec: StreamSpec) -> Batch:
    """An all-padding batch of the stream's shapes (a finite pass's filler)."""
    o = spec.objective
    if spec.decoder:
        arrays = decoder_batch([], spec.batch_size, spec.seq_len, spec.pad_id, spec.max_segments)
    else:
        arrays = seq2seq_batch([], spec.batch_size, o.inputs_length, o.targets_length,
                               spec.pad_id, spec.pad_id)  # fmt: skip
    if spec.provenance:
        arrays["provenance"] = provenance([], spec.batch_size)
    return to_torch(arrays)


def local_batches(spec: StreamSpec, cursor: Cursor, limit: int | None) -> Iterator[Batch]:
    """Batch j from lane j mod lanes, all lanes in this process."""
    if cursor.lanes is None:
        cursor.lanes = [Lane(spec, i, s) for i, s in enumerate(cursor.states)]
    lanes = cursor.lanes
    while limit is None or cursor.batches < limit:
        index = cursor.next_lane
        batch = lanes[index].next_batch()
        cursor.next_lane = (index + 1) % len(lanes)
        if batch is None:
            if limit is None:  # one rank, one pass: skip dry lanes until all are dry
                if all(lane.exhausted for lane in lanes):
                    return
                continue
            batch = empty_batch(spec)
        cursor.batches += 1
        yield batch


def worker_batches(
    spec: StreamSpec, cursor: Cursor, limit: int | None, workers: int, prefetch: int
) -> Iterator[Batch]:
    """The same batches, the lanes spread over `workers` DataLoader worker processes."""
    cursor.close_lanes()
    dataset = LaneDataset(spec, cursor.states, cursor.next_lane)
    # Workers ignore stop signals: the trainer stops them after its stop checkpoint.
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_as_is,
                        prefetch_factor=prefetch, worker_init_fn=_ignore_stop_signals)  # fmt: skip
    iterator = iter(loader)
    try:
        while limit is None or cursor.batches < limit:
            index, batch, state = next(iterator)
            cursor.states[index] = state
            cursor.next_lane = (index + 1) % spec.lanes
            if batch is None:
                if limit is None:
                    if all(s["exhausted"] for s in cursor.states):
                        return
                    continue
                batch = empty_batch(spec)
            cursor.batches += 1
            yield batch
    finally:
        del iterator


class LaneDataset(IterableDataset):
    """The lanes of one DataLoader worker; yields (lane, batch or None, lane state).

    Worker w runs lane l when (l - next_lane) mod workers == w and produces, in turn, the
    batches k = w, w + workers, ... of the rank's sequence (lane (next_lane + k) mod lanes);
    the DataLoader takes item k from worker k mod workers, so the order is the rank's order.
    """

    def __init__(self, spec: StreamSpec, states: list[dict], next_lane: int) -> None:
        self.spec, self.states, self.next_lane = spec, states, next_lane

    def __iter__(self) -> Iterator[tuple[int, Batch | None, dict]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        count = self.spec.lanes
        mine = {
            lane: Lane(self.spec, lane, self.states[lane])
            for lane in range(count)
            if (lane - self.next_lane) % workers == worker
        }
        k = worker
        try:
            while True:
                index = (self.next_lane + k) % count
                batch = mine[index].next_batch()
                yield index, batch, mine[index].state()
                k += workers
        finally:
            for lane in mine.values():
                lane.close()


def _ignore_stop_signals(worker_id: int) -> None:
    """A stop signal (scancel's SIGTERM reaches every process of a Slurm step) must not
    kill a worker: the trainer reads on until its stop checkpoint, then closes them."""
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_IGN)


def _as_is(item: Any) -> Any:
    return item
