"""A lane: one reader's complete pipeline, from its shard pieces to packed batches.

Each rank runs `lanes` of them and takes its batches from them in turn (batch j from lane
j mod lanes), in the main process or spread over DataLoader workers; a lane's output depends
only on its state, never on which process runs it, which is what makes resumption exact for any
number of workers.

Mixtures: a lane reads every source and decides, document by document, which one comes next:
the source with the fewest tokens taken relative to its weight (ties: the first listed). This
keeps the token shares at the weights exactly, needs no random state, and a document cut
between batches is always finished first.

State, at a batch boundary (all plain ints and lists):
    queues[s]      pieces of source s still to read; the first starts at the pending example
    next_epoch[s]  the epoch source s deals itself when its queue is empty
    mix[s], tokens[s], documents[s], counters: tokens taken for mixing, metrics
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causeway.data_pipeline.block_examples import Examples
from causeway.data_pipeline.block_objectives import BlockObjective
from causeway.data_pipeline.dealing import Dealer
from causeway.data_pipeline.doc_reader import SourceReader
from causeway.data_pipeline.row_packer import (
    Batch,
    RowPacker,
    decoder_batch,
    seq2seq_batch,
    to_torch,
)
from causeway.data_pipeline.sources import SourceData

COUNTERS = ("bad_samples", "bad_shards", "missing_shards", "sha256_mismatches", "rows",
            "positions", "filled")  # fmt: skip


@dataclass
class StreamSpec:
    """Everything a lane needs, picklable so that DataLoader workers can rebuild lanes."""

    datas: list[SourceData]
    objective: BlockObjective
    seed: int
    rank: int
    world_size: int
    lanes: int
    batch_size: int
    seq_len: int
    pad_id: int
    max_segments: int | None
    loop: bool
    verify: bool
    block_bytes: int
    provenance: bool

    @property
    def num_readers(self) -> int:
        return self.world_size * self.lanes

    @property
    def decoder(self) -> bool:
        return self.objective.arch == "decoder"


def initial_lane_state(num_sources: int) -> dict:
    zeros = [0] * num_sources
    return {"queues": [[] for _ in range(num_sources)], "next_epoch": list(zeros),
            "mix": list(zeros), "tokens": list(zeros), "documents": list(zeros),
            "counters": dict.fromkeys(COUNTERS, 0), "exhausted": False}  # fmt: skip


class Lane:
    """Batches of one reader. `next_batch` returns None once a finite lane has run dry."""

    def __init__(self, spec: StreamSpec, lane: int, state: dict) -> None:
        self.spec = spec
        reader = spec.rank * spec.lanes + lane
        self.readers = [
            SourceReader(
                data, Dealer(data.shards, spec.seed, s), reader, spec.num_readers,
                state["queues"][s], state["next_epoch"][s], spec.loop, spec.verify,
                spec.block_bytes,
            )
            for s, data in enumerate(spec.datas)
        ]  # fmt: skip
        n = len(spec.datas)
        self.weights = [d.weight for d in spec.datas]
        self.mix, self.tokens = list(state["mix"]), list(state["tokens"])
        self.documents, self.counters = list(state["documents"]), dict(state["counters"])
        self.exhausted = bool(state["exhausted"])
        self.current: list[Examples | None] = [None] * n
        self.next = [0] * n
        self.sizes: list[list[list[int]]] = [[] for _ in range(n)]
        self.doc_ends: list[list[int]] = [[] for _ in range(n)]
        self.committed = [0] * n
        self.done = [False] * n
        o = spec.objective
        capacity = (spec.seq_len,) if spec.decoder else (o.inputs_length, o.targets_length)
        self.packer = RowPacker(
            spec.batch_size, capacity, spec.max_segments if spec.decoder else None
        )

    # -- batches ------------------------------------------------------------------------------

    def next_batch(self) -> Batch | None:
        if self.exhausted:
            return None
        while not self.packer.full:
            s = self._pick()
            if s is None:
                self.exhausted = True
                if self.packer.empty:
                    return None
                break
            examples, start = self.current[s], self.next[s]
            stop = self.doc_ends[s][start] if len(self.readers) > 1 else len(examples)
            self._consume(s, start, self.packer.place(examples, self.sizes[s], start, stop))
        return self._emit()

    def _pick(self) -> int | None:
        """The source of the next document (see the module docstring), None if all are dry."""
        live = [s for s in range(len(self.readers)) if self._ensure(s)]
        for s in live:
            if self.current[s].chunk[self.next[s]] > 0:
                return s  # a document cut between batches (or ranks) is finished first
        if len(live) <= 1:
            return live[0] if live else None
        return min(live, key=lambda s: (self.mix[s] / self.weights[s], s))

    def _ensure(self, s: int) -> bool:
        """Make sure source s has an example block with examples left; False once it is dry."""
        while True:
            examples = self.current[s]
            if examples is not None and self.next[s] < len(examples):
                return True
            if examples is not None:
                self._commit(s, None)
                self.current[s] = None
            if self.done[s]:
                return False
            docs = self.readers[s].next_block()
            if docs is None:
                self.done[s] = True
                return False
            docs.source = s
            self._load(s, self.spec.objective(docs, self.spec.seed))

    def _load(self, s: int, examples: Examples) -> None:
        self.current[s], self.next[s], self.committed[s] = examples, 0, 0
        if self.spec.decoder:
            self.sizes[s] = [examples.lengths.tolist()]
        else:
            self.sizes[s] = [examples.input_lengths.tolist(), examples.target_lengths.tolist()]
        if len(self.readers) > 1 and len(examples):
            boundaries = np.flatnonzero(np.diff(examples.doc)) + 1
            ends = np.append(boundaries, len(examples))
            self.doc_ends[s] = np.repeat(ends, np.diff(np.append(0, ends))).tolist()

    def _consume(self, s: int, start: int, stop: int) -> None:
        if stop == start:
            return
        examples = self.current[s]
        raw = int(examples.raw[start:stop].sum())
        self.tokens[s] += raw
        self.mix[s] += raw
        self.documents[s] += int(np.count_nonzero(examples.chunk[start:stop] == 0))
        self.next[s] = stop

    def _emit(self) -> Batch:
        spec, parts = self.spec, self.packer.take_parts()
        if spec.decoder:
            arrays = decoder_batch(parts, spec.batch_size, spec.seq_len, spec.pad_id,
                                   spec.max_segments)  # fmt: skip
            capacity = spec.seq_len
        else:
            o = spec.objective
            arrays = seq2seq_batch(parts, spec.batch_size, o.inputs_length, o.targets_length,
                                   spec.pad_id, spec.pad_id)  # fmt: skip
            capacity = o.inputs_length + o.targets_length
        if spec.provenance:
            arrays["provenance"] = provenance(parts, spec.batch_size)
        self.counters["rows"] += spec.batch_size
        self.counters["positions"] += spec.batch_size * capacity
        self.counters["filled"] += sum(
            int(side[a:b].sum()) for ex, a, b, *_ in parts for side in _sides(ex)
        )
        for s in range(len(self.readers)):
            self._commit(s, self._cursor_sample(s))
        return to_torch(arrays)

    # -- events and state ---------------------------------------------------------------------

    def _cursor_sample(self, s: int) -> int | None:
        examples = self.current[s]
        if examples is None or self.next[s] >= len(examples):
            return None
        return int(examples.docs.samples[examples.doc[self.next[s]]])

    def _commit(self, s: int, before: int | None) -> None:
        """Count the events of the current block that the cursor has passed (all if None)."""
        examples = self.current[s]
        if examples is None:
            return
        events = examples.docs.events
        while self.committed[s] < len(events):
            sample, counter = events[self.committed[s]]
            if before is not None and sample >= before:
                break
            self.counters[counter] += 1
            self.committed[s] += 1

    def state(self) -> dict:
        return {
            "queues": [self._position(s) for s in range(len(self.readers))],
            "next_epoch": [r.next_epoch for r in self.readers],
            "mix": list(self.mix),
            "tokens": list(self.tokens),
            "documents": list(self.documents),
            "counters": dict(self.counters),
            "exhausted": self.exhausted,
        }

    def _position(self, s: int) -> list[list[int]]:
        examples, i = self.current[s], self.next[s]
        reader = self.readers[s]
        if examples is None or i >= len(examples):
            return reader.position()
        docs = examples.docs
        sample = int(docs.samples[examples.doc[i]])
        head = [docs.epoch, docs.shard, sample, docs.piece_stop, int(examples.chunk[i])]
        return [head] + [list(p) for p in reader.queue]

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def _sides(examples: Examples) -> list[np.ndarray]:
    if examples.inputs is None:
        return [examples.lengths]
    return [examples.input_lengths, examples.target_lengths]


def provenance(parts: list, batch_size: int) -> np.ndarray:
    """[batch, segments + 1, 5]: (source, epoch, shard, sample, chunk) of every segment."""
    most = max((max(numbers) for *_, numbers in parts), default=0)
    out = np.full((batch_size, most + 1, 5), -1, dtype=np.int64)
    for ex, a, b, rows, _, numbers in parts:
        docs, doc = ex.docs, ex.doc[a:b]
        values = [np.full(b - a, docs.source), np.full(b - a, docs.epoch),
                  np.full(b - a, docs.shard), docs.samples[doc], ex.chunk[a:b]]  # fmt: skip
        out[np.asarray(rows), np.asarray(numbers)] = np.stack(values, axis=1)
    return out
