"""`DataStream`: the deterministic, resumable batch stream, read by share.

Layout. A stream has `readers` readers (a fixed number, part of the recipe); every epoch of
every dataset is dealt among them (`dealing.py`), and every global batch of `batch_size` rows
takes `batch_size / readers` rows from each reader, in reader order. The `world_size`
data-parallel ranks split the readers into contiguous runs: rank r runs readers
[r * readers / world_size, (r + 1) * readers / world_size) and yields their rows, which are
rows [r * batch_size / world_size, ...) of the global batch. So the global batch is the same
under every layout, and each rank reads, decodes and packs only its own 1/world_size of the
data. With `num_workers` > 0 the rank's readers are spread over worker processes; the
batches do not depend on num_workers.

Equal batch counts. A looping stream (loop=True, training) never ends: a reader that finishes
its share of an epoch deals itself its share of the next one and goes on, so no rank waits for
another at an epoch boundary. A finite pass (loop=False) reads one epoch: with one rank it ends
when every reader has run dry (the last rows padded); with several ranks every rank yields
exactly
    N = ceil(max over readers of the reader's tokens / (rows per reader * row_tokens))
batches, N computed from index.json alone, so all ranks agree without talking; a reader that
runs out first gives padding rows (loss_mask all False).

Resumption. `state_dict()` is this rank's position, `global_state_dict()` every rank's (a
collective); loading the global state continues exactly where the run stood, under any number
of data-parallel ranks and any num_workers (see `state.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from causeway.data_pipeline.objectives.objectives import make_block_objective
from causeway.data_pipeline.packing.arrays import Batch
from causeway.data_pipeline.shards.samples import probe_source
from causeway.data_pipeline.shards.sources import (
    SourceSpec,
    as_sources,
    load_source,
    shared_tokenizer,
)
from causeway.data_pipeline.stream.dealing import Dealer
from causeway.data_pipeline.stream.processes import LoaderWorkerDied
from causeway.data_pipeline.stream.reader import Counters, ReaderState, StreamSpec
from causeway.data_pipeline.stream.state import Layout, merge_states, rank_state, select
from causeway.data_pipeline.stream.workers import (
    WORKER_RESTARTS,
    Cursor,
    empty_batch,
    local_batches,
    worker_batches,
)
from causeway.data_pipeline.tokenizer import Tokenizer

MAX_DEFAULT_READERS = 64
BLOCK_BYTES = 1 << 19


def default_readers(batch_size: int) -> int:
    """The largest divisor of batch_size up to 64: every data-parallel size up to 64 that
    divides the batch (and is a power of two, or divides it) then divides the readers too."""
    return max(d for d in range(1, min(batch_size, MAX_DEFAULT_READERS) + 1) if batch_size % d == 0)


def fit_readers(wanted: int, documents: int, batch_size: int, world_size: int) -> int:
    """`wanted` readers, or for a split with fewer documents (a small validation split) the
    most that it and the layout allow (a multiple of world_size dividing batch_size)."""
    if documents >= wanted:
        return wanted
    fits = [d for d in range(world_size, documents + 1, world_size) if batch_size % d == 0]
    return max(fits, default=wanted)  # none fits: the stream's own check names the problem


def check_readers(readers: int, batch_size: int, world_size: int) -> None:
    """Readers must divide the global batch (equal rows each) and be split evenly by ranks."""
    if batch_size % world_size:
        raise ValueError(
            f"data.batch_size ({batch_size}) is not divisible by the data-parallel size "
            f"({world_size})"
        )
    if readers < 1 or batch_size % readers:
        valid = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        raise ValueError(
            f"data.readers ({readers}) must divide data.batch_size ({batch_size}) so that every "
            f"reader gives the same number of rows; valid: {valid[:12]}"
        )
    if readers % world_size:
        valid = [d for d in range(world_size, batch_size + 1, world_size) if batch_size % d == 0]
        raise ValueError(
            f"data.readers ({readers}) must be a multiple of the data-parallel size "
            f"({world_size}) so that every rank runs whole readers; valid: {valid[:12]}"
        )


class DataStream:
    """Packed batches of one split of one dataset or a weighted mixture (see module docstring).

    sources: a dataset directory/URL, a `Source`, {"path", "weight", "name", "shards"},
        (path, weight), or a list of these (a mixture).
    objective / arch / seq_len / inputs_length / targets_length / objective_params: as for
        `make_block_objective`. batch_size: rows of the global batch (all ranks together).
    readers: readers of the stream (default `default_readers(batch_size)`); part of the data
        order, independent of the layout. rank / world_size: this data-parallel rank.
    num_workers: worker processes (0: read in this process). worker_restarts: deaths of a
        worker in a row (no batch in between) restarted from its readers' state; one more
        raises `LoaderWorkerDied` (see workers.py).
    verify_sha256: check each shard read to its end against index.json (reported, not fatal).
    provenance: add "provenance" [rows, segments + 1, 5] = (source, epoch, shard, sample,
        chunk) per segment, for debugging and tests.
    """

    def __init__(
        self,
        sources: SourceSpec,
        split: str,
        objective: str,
        arch: str,
        seq_len: int,
        batch_size: int,
        *,
        readers: int | None = None,
        tokenizer: Tokenizer | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        loop: bool = True,
        inputs_length: int | None = None,
        targets_length: int | None = None,
        objective_params: dict[str, float] | None = None,
        max_segments: int | None = None,
        verify_sha256: bool = True,
        provenance: bool = False,
        prefetch_factor: int = 2,
        worker_restarts: int = WORKER_RESTARTS,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        readers = default_readers(batch_size) if readers is None else readers
        check_readers(readers, batch_size, world_size)
        datas = [load_source(source, split) for source in as_sources(sources)]
        for data in datas:
            probe_source(data)
            if data.documents < readers:
                raise ValueError(
                    f"dataset {data.name!r} split {split!r} has {data.documents} documents, "
                    f"fewer than its {readers} readers; set data.readers lower"
                )
        self.tokenizer = shared_tokenizer(datas) if tokenizer is None else tokenizer
        self.objective = make_block_objective(
            objective, arch, self.tokenizer, seq_len, inputs_length, targets_length,
            objective_params,
        )  # fmt: skip
        if self.objective.takes_pairs and any(d.format != "pairs" for d in datas):
            raise ValueError("objective 'mtf' needs pair datasets (prepared with pair_fields)")
        self.spec = StreamSpec(
            datas, self.objective, seed, rank, world_size, readers, batch_size // readers,
            seq_len, self.tokenizer.pad_id, max_segments, loop, verify_sha256, BLOCK_BYTES,
            provenance,
        )  # fmt: skip
        self.layout = Layout(readers, seed, datas, rank, world_size)
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.worker_restarts = worker_restarts
        local = len(self.spec.local_readers)
        self._cursor = Cursor([ReaderState.initial(len(datas)) for _ in range(local)])
        self._limit = self.batches_per_pass()
        self._iterator: Iterator[Batch] | None = None

    # -- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> DataStream:
        return self

    def __next__(self) -> Batch:
        if self._iterator is None:
            spec, cursor, limit = self.spec, self._cursor, self._limit
            self._iterator = (
                local_batches(spec, cursor, limit) if self.num_workers == 0 else
                worker_batches(spec, cursor, limit, self.num_workers, self.prefetch_factor,
                               self.worker_restarts)
            )  # fmt: skip
        try:
            return next(self._iterator)
        except LoaderWorkerDied:
            self._iterator = None  # the state is that of the last batch: next() starts afresh
            raise

    def batches_per_pass(self) -> int | None:
        """N of a finite pass with several ranks (see the module docstring); None otherwise."""
        spec = self.spec
        if spec.loop or spec.world_size == 1:
            return None
        dealers = [Dealer(d.shards, spec.seed, s) for s, d in enumerate(spec.datas)]
        most = max(
            sum(d.share_tokens(0, spec.readers, reader) for d in dealers)
            for reader in range(spec.readers)
        )
        return math.ceil(most / (spec.rows * self.objective.row_tokens))

    def empty_batch(self) -> Batch:
        """An all-padding batch of this rank's shapes (a finite pass's filler)."""
        return empty_batch(self.spec)

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """This rank's position (see state.py); loads with torch.load(weights_only=True)."""
        return rank_state(self.layout, self._cursor.batches, self._cursor.reader_states())

    def global_state_dict(self, group: Any = None) -> dict[str, Any]:
        """Every rank's state merged (gathered over `group` with torch.distributed when there
        are several ranks: call it on all ranks together). This is what a checkpoint saves."""
        local = self.state_dict()
        if self.spec.world_size == 1:
            return merge_states([local])
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("global_state_dict with several ranks needs torch.distributed")
        gathered: list[Any] = [None] * self.spec.world_size
        dist.all_gather_object(gathered, local, group=group)
        return merge_states(gathered)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a rank state or a global state (which may come from another number of
        ranks or readers). The next batch is the one after the saved position."""
        readers, batches = select(state, self.layout)
        self.close()
        self._cursor = Cursor(readers, batches)

    def metrics(self) -> dict[str, float | int]:
        """Cumulative figures of this rank, for logging (see docs/data.md for the keys)."""
        readers = [r.figures for r in self._cursor.reader_states()]
        out: dict[str, float | int] = {}
        for s, data in enumerate(self.spec.datas):
            out[f"data/tokens/{data.name}"] = sum(r.tokens[s] for r in readers)
            out[f"data/documents/{data.name}"] = sum(r.documents[s] for r in readers)
            out[f"data/epoch/{data.name}"] = min(_epoch(r, s) for r in readers)
        total = Counters()
        for r in readers:
            total.add(r.counters)
        for key in Counters.BAD_DATA:
            out[f"data/{key}"] = getattr(total, key)
        out["data/padding_fraction"] = (
            1.0 - total.filled / total.positions if total.positions else 0.0
        )
        out["data/batches"] = self._cursor.batches
        return out

    @property
    def bytes_read(self) -> int:
        """Shard bytes this rank has read since it was built: unlike `metrics()` not carried
        through checkpoints (a resumed reader re-reads the headers it skips)."""
        return sum(r.bytes_read for r in self._cursor.reader_states())

    def close(self) -> None:
        """Stop any worker processes and close open shards; iteration can start again."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None
        self._cursor.close_readers()


def _epoch(reader: ReaderState, source: int) -> int:
    queue = reader.queues[source]
    return queue[0].epoch if queue else max(reader.next_epoch[source] - 1, 0)


__all__ = ["DataStream", "default_readers", "merge_states"]
