"""A reader: one complete pipeline from its shard pieces to packed rows.

A stream has `readers` of them (a fixed number, independent of the layout), and every batch
takes the same number of rows (`StreamSpec.rows`) from each, in reader order: the global batch
is therefore the same whatever the number of data-parallel ranks, and each rank runs only its
own readers (`StreamSpec.local_readers`), so it reads only its share of the data. A reader's
output depends only on its state, never on which process runs it, which is what makes
resumption exact for any number of DataLoader workers.

Mixtures: a reader reads every source and decides, document by document, which one comes
next: the source with the fewest tokens taken relative to its weight (ties: the first listed).
This keeps the token shares at the weights exactly, needs no random state, and a document cut
between batches is always finished first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from causeway.data_pipeline.block_examples import Examples
from causeway.data_pipeline.block_objectives import BlockObjective
from causeway.data_pipeline.row_packer import Placement, RowPacker
from causeway.data_pipeline.sources import SourceData
from causeway.data_pipeline.stream.dealing import Dealer, Piece
from causeway.data_pipeline.stream.walk import ShardWalk


@dataclass
class Counters:
    """Cumulative counts of one reader (saved with its state)."""

    bad_samples: int = 0
    bad_shards: int = 0
    missing_shards: int = 0
    sha256_mismatches: int = 0
    rows: int = 0
    positions: int = 0
    filled: int = 0

    BAD_DATA = ("bad_samples", "bad_shards", "missing_shards", "sha256_mismatches")

    def add(self, other: Counters) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class ReaderState:
    """Where a reader stands at a batch boundary. Per source s: `queues[s]` the pieces still
    to read (the first starts at the pending example), `next_epoch[s]` the epoch it deals
    itself when the queue is empty, and the tokens taken for mixing and the metrics."""

    queues: list[list[Piece]]
    next_epoch: list[int]
    mix: list[int]
    tokens: list[int]
    documents: list[int]
    counters: Counters = field(default_factory=Counters)
    exhausted: bool = False
    bytes_read: int = 0  # in this process only: not saved

    @classmethod
    def initial(cls, num_sources: int) -> ReaderState:
        zeros = [0] * num_sources
        return cls([[] for _ in zeros], list(zeros), list(zeros), list(zeros), list(zeros))

    def encode(self) -> list:
        """Nested lists of ints, as saved in a checkpoint (loads with weights_only=True)."""
        counters = [int(v) for v in dataclasses.astuple(self.counters)]
        queues = [[[int(x) for x in piece] for piece in queue] for queue in self.queues]
        per_source = [[int(x) for x in v] for v in (self.next_epoch, self.mix, self.tokens,
                                                     self.documents)]  # fmt: skip
        return [queues, *per_source, counters, int(self.exhausted)]

    @classmethod
    def decode(cls, encoded: list) -> ReaderState:
        queues, next_epoch, mix, tokens, documents, counters, exhausted = encoded
        return cls(
            [[Piece(*p) for p in queue] for queue in queues], list(next_epoch), list(mix),
            list(tokens), list(documents), Counters(*counters), bool(exhausted),
        )  # fmt: skip


@dataclass
class StreamSpec:
    """Everything a reader needs, picklable so that DataLoader workers can rebuild readers."""

    datas: list[SourceData]
    objective: BlockObjective
    seed: int
    rank: int
    world_size: int
    readers: int
    rows: int  # rows each reader gives every batch
    seq_len: int
    pad_id: int
    max_segments: int | None
    loop: bool
    verify: bool
    block_bytes: int
    provenance: bool

    @property
    def local_readers(self) -> range:
        """This rank's readers: a contiguous run, so its rows are a slice of the global batch."""
        per_rank = self.readers // self.world_size
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)

    @property
    def decoder(self) -> bool:
        return self.objective.arch == "decoder"

    @property
    def capacity(self) -> tuple[int, ...]:
        o = self.objective
        return (self.seq_len,) if self.decoder else (o.inputs_length, o.targets_length)


class Reader:
    """Rows of one reader. `next_rows` returns None once a finite reader has run dry."""

    def __init__(self, spec: StreamSpec, index: int, state: ReaderState) -> None:
        self.spec = spec
        self.walks = [
            ShardWalk(
                data, Dealer(data.shards, spec.seed, s), index, spec.readers,
                state.queues[s], state.next_epoch[s], spec.loop, spec.verify, spec.block_bytes,
            )
            for s, data in enumerate(spec.datas)
        ]  # fmt: skip
        n = len(spec.datas)
        self.weights = [d.weight for d in spec.datas]
        self.mix, self.tokens = list(state.mix), list(state.tokens)
        self.documents = list(state.documents)
        self.counters = dataclasses.replace(state.counters)
        self.exhausted = state.exhausted
        self.bytes_before = state.bytes_read
        self.current: list[Examples | None] = [None] * n
        self.next = [0] * n
        self.sizes: list[list[list[int]]] = [[] for _ in range(n)]
        self.doc_ends: list[list[int]] = [[] for _ in range(n)]
        self.committed = [0] * n
        self.done = [False] * n
        limit = spec.max_segments if spec.decoder else None
        self.packer = RowPacker(spec.rows, spec.capacity, limit)

    # -- rows ---------------------------------------------------------------------------------

    def next_rows(self) -> list[Placement] | None:
        """The placements of this reader's next `spec.rows` rows (rows numbered from 0)."""
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
            stop = self.doc_ends[s][start] if len(self.walks) > 1 else len(examples)
            self._consume(s, start, self.packer.place(examples, self.sizes[s], start, stop))
        return self._finish_rows()

    def _pick(self) -> int | None:
        """The source of the next document (see the module docstring), None if all are dry."""
        live = [s for s in range(len(self.walks)) if self._ensure(s)]
        for s in live:
            if self.current[s].chunk[self.next[s]] > 0:
                return s  # a document cut between batches (or readers) is finished first
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
            docs = self.walks[s].next_block()
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
        if len(self.walks) > 1 and len(examples):
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

    def _finish_rows(self) -> list[Placement]:
        placements = self.packer.take_placements()
        spec = self.spec
        self.counters.rows += spec.rows
        self.counters.positions += spec.rows * sum(spec.capacity)
        self.counters.filled += sum(p.filled() for p in placements)
        for s in range(len(self.walks)):
            self._commit(s, self._cursor_sample(s))
        return placements

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
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            self.committed[s] += 1

    def state(self) -> ReaderState:
        return ReaderState(
            queues=[self._position(s) for s in range(len(self.walks))],
            next_epoch=[w.next_epoch for w in self.walks],
            mix=list(self.mix),
            tokens=list(self.tokens),
            documents=list(self.documents),
            counters=dataclasses.replace(self.counters),
            exhausted=self.exhausted,
            bytes_read=self.bytes_before + sum(w.bytes_read for w in self.walks),
        )

    def _position(self, s: int) -> list[Piece]:
        examples, i = self.current[s], self.next[s]
        walk = self.walks[s]
        if examples is None or i >= len(examples):
            return walk.position()
        docs = examples.docs
        sample = int(docs.samples[examples.doc[i]])
        head = Piece(docs.epoch, docs.shard, sample, docs.piece_stop, int(examples.chunk[i]))
        return [head, *walk.queue]

    def close(self) -> None:
        for walk in self.walks:
            walk.close()
