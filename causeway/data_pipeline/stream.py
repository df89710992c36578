"""`DataStream`: the deterministic, resumable, rank- and worker-aware batch stream.

Layout. A run has `world_size` data-parallel ranks; each rank has `lanes` readers (lanes),
`world_size * lanes` readers in all, and every epoch of every dataset is dealt among them
(`dealing.py`). Rank r yields batch j from its lane j mod lanes. With `num_workers` > 0 the
lanes are spread over DataLoader workers (lane l in worker (l - next_lane) mod num_workers,
which is why num_workers must divide lanes): the DataLoader's round-robin over workers then
returns exactly the order above, so the batches do not depend on num_workers.

Equal batch counts. A looping stream (loop=True, training) never ends: a lane that finishes
its share of an epoch deals itself its share of the next one and goes on, so every rank can
always produce its next batch and no rank waits for another at an epoch boundary. A finite
pass (loop=False) reads one epoch: with one rank it ends when every lane has run dry (the
last rows padded); with several ranks every rank yields exactly
    N = ceil(max over ranks of the rank's tokens / (batch_size * row_tokens))
batches, N computed from index.json alone, so all ranks agree without talking; a rank whose
documents run out first yields all-padding batches (loss_mask all False), one with documents
left after N batches stops there.

Resumption. `state_dict()` is this rank's position (see `stream_state.py`); loading it gives
bit-for-bit the batches an uninterrupted run would have given, with any num_workers. Save
`merge_states` of all ranks (or `global_state_dict()`, which gathers it) to be able to resume
with another number of ranks: then every document not yet in a yielded batch is read exactly
once, and none already yielded is read again in that epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from causeway.data_pipeline.block_objectives import make_block_objective
from causeway.data_pipeline.dealing import EPOCH, Dealer
from causeway.data_pipeline.lane import COUNTERS, StreamSpec, initial_lane_state
from causeway.data_pipeline.row_packer import Batch
from causeway.data_pipeline.samples import probe_source
from causeway.data_pipeline.sources import SourceSpec, as_sources, load_source, shared_tokenizer
from causeway.data_pipeline.stream_iteration import (
    Cursor,
    empty_batch,
    local_batches,
    worker_batches,
)
from causeway.data_pipeline.stream_state import (
    STATE_VERSION,
    encode_reader,
    merge_states,
    select,
)
from causeway.data_pipeline.tokenizer import Tokenizer

DEFAULT_LANES = 4
BLOCK_BYTES = 1 << 19


class DataStream:
    """Packed batches of one split of one dataset or a weighted mixture (see module docstring).

    sources: a dataset directory/URL, a `Source`, {"path", "weight", "name", "shards"},
        (path, weight), or a list of these (a mixture).
    objective / arch / seq_len / inputs_length / targets_length / objective_params: as for
        `make_objective`. rank / world_size: this rank among the data-parallel ranks.
    num_workers: DataLoader worker processes (0: read in this process); must divide `lanes`.
    lanes: readers per rank; part of the data order (changing it is a resize).
    verify_sha256: check each shard read to its end against index.json (reported, not fatal).
    provenance: add "provenance" [batch, segments + 1, 5] = (source, epoch, shard, sample,
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
        tokenizer: Tokenizer | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        lanes: int = DEFAULT_LANES,
        loop: bool = True,
        inputs_length: int | None = None,
        targets_length: int | None = None,
        objective_params: dict[str, float] | None = None,
        max_segments: int | None = None,
        verify_sha256: bool = True,
        provenance: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        _check_layout(rank, world_size, lanes, num_workers)
        datas = [load_source(source, split) for source in as_sources(sources)]
        for data in datas:
            probe_source(data)
            if data.documents < world_size * lanes:
                raise ValueError(
                    f"dataset {data.name!r} split {split!r} has {data.documents} documents, "
                    f"fewer than its {world_size * lanes} readers ({world_size} ranks x "
                    f"{lanes} lanes); use fewer lanes"
                )
        self.tokenizer = shared_tokenizer(datas) if tokenizer is None else tokenizer
        self.objective = make_block_objective(
            objective, arch, self.tokenizer, seq_len, inputs_length, targets_length,
            objective_params,
        )  # fmt: skip
        if self.objective.takes_pairs and any(d.format != "pairs" for d in datas):
            raise ValueError("objective 'mtf' needs pair datasets (prepared with pair_fields)")
        self.spec = StreamSpec(
            datas, self.objective, seed, rank, world_size, lanes, batch_size, seq_len,
            self.tokenizer.pad_id, max_segments, loop, verify_sha256, BLOCK_BYTES, provenance,
        )  # fmt: skip
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self._cursor = Cursor([initial_lane_state(len(datas)) for _ in range(lanes)])
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
                worker_batches(spec, cursor, limit, self.num_workers, self.prefetch_factor)
            )  # fmt: skip
        return next(self._iterator)

    def batches_per_pass(self) -> int | None:
        """N of a finite pass with several ranks (see the module docstring); None otherwise."""
        spec = self.spec
        if spec.loop or spec.world_size == 1:
            return None
        dealers = [Dealer(d.shards, spec.seed, s) for s, d in enumerate(spec.datas)]
        most = max(
            sum(d.share_tokens(0, spec.num_readers, r * spec.lanes + lane)
                for d in dealers for lane in range(spec.lanes))
            for r in range(spec.world_size)
        )  # fmt: skip
        return math.ceil(most / (spec.batch_size * self.objective.row_tokens))

    def empty_batch(self) -> Batch:
        """An all-padding batch of this stream's shapes (a finite pass's filler)."""
        return empty_batch(self.spec)

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """This rank's position: ints, strings and nested lists of ints (see stream_state.py);
        loads with torch.load(weights_only=True)."""
        spec = self.spec
        cursor = self._cursor
        return {
            "version": STATE_VERSION,
            "rank": spec.rank,
            "world_size": spec.world_size,
            "lanes": spec.lanes,
            "seed": spec.seed,
            "sources": [d.name for d in spec.datas],
            "next_lane": cursor.next_lane,
            "batches": cursor.batches,
            "readers": [encode_reader(r) for r in cursor.lane_states()],
        }

    def global_state_dict(self, group: Any = None) -> dict[str, Any]:
        """Every rank's state merged (gathered over `group` with torch.distributed when there
        are several ranks: call it on all ranks together). Save this to allow a resize."""
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
        """Continue from a rank state or a merged state (which may come from another number of
        ranks or lanes). The next batch is the one after the saved position."""
        spec = self.spec
        readers, next_lane, batches = select(
            state, spec.rank, spec.world_size, spec.lanes, spec.seed, spec.datas
        )
        self.close()
        self._cursor = Cursor(readers, next_lane, batches)

    def metrics(self) -> dict[str, float | int]:
        """Cumulative figures of this rank, for logging (see docs/data.md for the keys)."""
        readers = self._cursor.lane_states()
        out: dict[str, float | int] = {}
        for s, data in enumerate(self.spec.datas):
            out[f"data/tokens/{data.name}"] = sum(r["tokens"][s] for r in readers)
            out[f"data/documents/{data.name}"] = sum(r["documents"][s] for r in readers)
            out[f"data/epoch/{data.name}"] = min(_epoch(r, s) for r in readers)
        for key in COUNTERS[:4]:
            out[f"data/{key}"] = sum(r["counters"][key] for r in readers)
        positions = sum(r["counters"]["positions"] for r in readers)
        filled = sum(r["counters"]["filled"] for r in readers)
        out["data/padding_fraction"] = 1.0 - filled / positions if positions else 0.0
        out["data/batches"] = self._cursor.batches
        return out

    def close(self) -> None:
        """Stop any worker processes and close open shards; iteration can start again."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None
        self._cursor.close_lanes()


def _epoch(reader: dict, source: int) -> int:
    queue = reader["queues"][source]
    return queue[0][EPOCH] if queue else max(reader["next_epoch"][source] - 1, 0)


def _check_layout(rank: int, world_size: int, lanes: int, num_workers: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    if num_workers < 0 or (num_workers and lanes % num_workers):
        valid = [w for w in range(lanes + 1) if w == 0 or lanes % w == 0]
        raise ValueError(
            f"num_workers {num_workers} must divide lanes {lanes} (so the batch order does not "
            f"depend on it); valid: {valid}"
        )


__all__ = ["DataStream", "merge_states"]
