"""A reader: one complete pipeline from its shard pieces to packed rows.

A stream has `readers` of them (a fixed number, independent of the layout), and every batch
takes the same number of rows (`StreamSpec.rows`) from each, in reader order: the global batch
is therefore the same whatever the number of data-parallel ranks, and each rank runs only its
own readers (`StreamSpec.local_readers`), so it reads only its share of the data. A reader's
output depends only on its state, never on which process runs it, which is what makes
resumption exact for any number of worker processes.

Mixtures: a reader reads every source and decides, document by document, which one comes
next: the source with the fewest tokens taken relative to its weight (ties: the first listed).
This keeps the token shares at the weights exactly, needs no random state, and a document cut
between batches is always finished first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from causeway.data_pipeline.objectives.examples import Examples
from causeway.data_pipeline.objectives.objectives import BlockObjective
from causeway.data_pipeline.packing.rows import (
    Placement,
    RowPacker,
    best_fit_rows,
    rows_to_placements,
)
from causeway.data_pipeline.shards.sources import SourceData
from causeway.data_pipeline.stream.dealing import Dealer, Piece
from causeway.data_pipeline.stream.walk import ShardWalk

# Best fit looks ahead about this many positions of examples (at least 32 rows): the
# padding / memory trade-off (benchmarks/packing.py).
WINDOW_POSITIONS = 1 << 15


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
    window_rows: int = 0  # best fit: rows already given of the window that starts here
    bytes_read: int = 0  # in this process only: not saved
    # Inside a best-fit window the saved state is the window's start; `live` holds the
    # figures as they stand, for metrics (not saved).
    live: ReaderState | None = None

    @property
    def figures(self) -> ReaderState:
        """The state whose counts are current (for metrics)."""
        return self.live or self

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
        return [queues, *per_source, counters, int(self.exhausted), int(self.window_rows)]

    @classmethod
    def decode(cls, encoded: list) -> ReaderState:
        queues, next_epoch, mix, tokens, documents, counters, exhausted, window = encoded
        return cls(
            [[Piece(*p) for p in queue] for queue in queues], list(next_epoch), list(mix),
            list(tokens), list(documents), Counters(*counters), bool(exhausted), int(window),
        )  # fmt: skip


@dataclass
class StreamSpec:
    """Everything a reader needs, picklable so that worker processes can rebuild readers."""

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
    """Rows of one reader. `next_rows` returns None once a finite reader has run dry.

    Position-wise examples (`objective.splittable`) are packed in order, split at row ends,
    so rows are full. Atomic examples are packed by best fit over a window of about
    WINDOW_POSITIONS positions of examples; the state then is the reader's position at the
    window's start plus the rows of it already given, and a resumed reader rebuilds that window
    exactly. Metrics count what enters the window (at most one window ahead of the rows).
    """

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
        self.skip = [0] * n  # positions of example next[s] already placed (split examples)
        self.sizes: list[list[list[int]]] = [[] for _ in range(n)]
        self.doc_ends: list[list[int]] = [[] for _ in range(n)]
        self.committed = [0] * n
        self.done = [False] * n
        self.limit = spec.max_segments if spec.decoder else None
        splittable = spec.objective.splittable
        self.packer = RowPacker(spec.rows, spec.capacity, self.limit, split=True) if (
            splittable) else None  # fmt: skip
        self.window: list[list] = []
        self.window_start: ReaderState | None = None
        self.window_given = 0
        self.window_replay = state.window_rows

    # -- rows ---------------------------------------------------------------------------------

    def next_rows(self) -> list[Placement] | None:
        """The placements of this reader's next `spec.rows` rows (rows numbered from 0)."""
        if self.packer is None:
            return self._best_fit_rows()
        if self.exhausted:
            return None
        packer = self.packer
        while not packer.full:
            s = self._pick()
            if s is None:
                self.exhausted = True
                if packer.empty:
                    return None
                break
            examples, start = self.current[s], self.next[s]
            stop = self.doc_ends[s][start] if len(self.walks) > 1 else len(examples)
            index, skip = packer.place(examples, self.sizes[s], start, stop, self.skip[s])
            self._consume(s, start, index, skip)
        placements = packer.take_placements()
        self._count_rows(spec_rows=self.spec.rows, filled=sum(p.filled() for p in placements))
        self._commit_all()
        return placements

    def _best_fit_rows(self) -> list[Placement] | None:
        rows: list[list] = []
        while len(rows) < self.spec.rows:
            if not self.window and not self._open_window():
                break
            rows.append(self.window.pop(0))
            self.window_given += 1
        return rows_to_placements(rows) if rows else None

    def _open_window(self) -> bool:
        """Pack the next window of examples by best fit; False when the reader is dry."""
        if self.exhausted:
            return False
        self.window_start, self.window_given = self.state(), 0
        items: list[tuple[Examples, int]] = []
        capacity, load = self.spec.capacity, 0.0
        while load < max(WINDOW_POSITIONS // sum(capacity), 32, self.spec.rows):
            s = self._pick()
            if s is None:
                self.exhausted = True
                break
            examples, i = self.current[s], self.next[s]
            items.append((examples, i))
            self._consume(s, i, i + 1, 0)
            load += max(int(side[i]) / c for side, c in zip(self.sizes_of(examples), capacity,
                                                            strict=True))  # fmt: skip
        self._commit_all()
        self.window = best_fit_rows(items, capacity, self.limit)
        filled = sum(int(side[i]) for ex, i in items for side in self.sizes_of(ex))
        self._count_rows(spec_rows=len(self.window), filled=filled)
        if self.window_replay:  # resumed inside this window: its first rows were given
            del self.window[: self.window_replay]
            self.window_given, self.window_replay = self.window_replay, 0
        return bool(self.window)

    @staticmethod
    def sizes_of(examples: Examples) -> list[np.ndarray]:
        if examples.inputs is None:
            return [examples.lengths]
        return [examples.input_lengths, examples.target_lengths]

    def _count_rows(self, spec_rows: int, filled: int) -> None:
        self.counters.rows += spec_rows
        self.counters.positions += spec_rows * sum(self.spec.capacity)
        self.counters.filled += filled

    def _pick(self) -> int | None:
        """The source of the next document (see the module docstring), None if all are dry."""
        live = [s for s in range(len(self.walks)) if self._ensure(s)]
        for s in live:
            if self.current[s].chunk[self.next[s]] > 0 or self.skip[s] > 0:
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
        self.skip[s] = examples.docs.first_offset if len(examples) else 0  # a split's rest
        self.sizes[s] = [side.tolist() for side in self.sizes_of(examples)]
        if len(self.walks) > 1 and len(examples):
            boundaries = np.flatnonzero(np.diff(examples.doc)) + 1
            ends = np.append(boundaries, len(examples))
            self.doc_ends[s] = np.repeat(ends, np.diff(np.append(0, ends))).tolist()

    def _consume(self, s: int, start: int, index: int, skip: int) -> None:
        """Examples start..index placed whole, and `skip` positions of example `index`: an
        example counts for the metrics when its first position is placed."""
        first = start + (1 if self.skip[s] else 0)
        last = index + (1 if skip else 0)
        if last > first:
            examples = self.current[s]
            raw = int(examples.raw[first:last].sum())
            self.tokens[s] += raw
            self.mix[s] += raw
            self.documents[s] += int(np.count_nonzero(examples.chunk[first:last] == 0))
        self.next[s], self.skip[s] = index, skip

    # -- events and state ---------------------------------------------------------------------

    def _commit_all(self) -> None:
        for s in range(len(self.walks)):
            self._commit(s, self._cursor_sample(s))

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
        """At a batch boundary: the position (or, inside a best-fit window, the window's start
        and the rows of it given)."""
        bytes_read = self.bytes_before + sum(w.bytes_read for w in self.walks)
        live = self._live_state(bytes_read)
        if self.window and self.window_start is not None:
            return dataclasses.replace(self.window_start, window_rows=self.window_given,
                                       bytes_read=bytes_read, live=live)  # fmt: skip
        return live

    def _live_state(self, bytes_read: int) -> ReaderState:
        return ReaderState(
            window_rows=self.window_replay,  # restored inside a window not yet rebuilt
            queues=[self._position(s) for s in range(len(self.walks))],
            next_epoch=[w.next_epoch for w in self.walks],
            mix=list(self.mix),
            tokens=list(self.tokens),
            documents=list(self.documents),
            counters=dataclasses.replace(self.counters),
            exhausted=self.exhausted,
            bytes_read=bytes_read,
        )

    def _position(self, s: int) -> list[Piece]:
        examples, i = self.current[s], self.next[s]
        walk = self.walks[s]
        if examples is None or i >= len(examples):
            return walk.position()
        docs = examples.docs
        sample = int(docs.samples[examples.doc[i]])
        head = Piece(docs.epoch, docs.shard, sample, docs.piece_stop, int(examples.chunk[i]),
                     self.skip[s])  # fmt: skip
        return [head, *walk.queue]

    def close(self) -> None:
        for walk in self.walks:
            walk.close()
