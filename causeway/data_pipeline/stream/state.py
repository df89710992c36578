"""The stream's resumable state: one rank's, all ranks' merged, and its redistribution when the
number of readers changes.

Rank state (`DataStream.state_dict`): this rank's readers only,

    {"version": 2, "readers": V, "seed": s, "sources": [names], "batches": n,
     "rank": r, "world_size": R, "reader_states": [one per reader of this rank]}

Global state (`merge_states` of every rank's state, or `DataStream.global_state_dict`): the
same without "rank" and "world_size", with all V readers. It is what a checkpoint holds:
identical on every rank, so torch.distributed.checkpoint stores it once, and every top-level
value is an int, a string or a nested list of ints (each stored whole), so a state saved by R
ranks loads into a template made by R' ranks.

Because the readers do not depend on the layout, loading a global state under another number
of data-parallel ranks just hands each rank its readers: the run continues exactly as if it
had never stopped. Only a different number of readers needs `redistribute`: every old
reader's unread pieces (and the untouched shares of epochs some readers had not started) are
pooled in epoch order and dealt to the new readers, so every document not yet in a yielded
batch is read exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from causeway.data_pipeline.shards.sources import SourceData
from causeway.data_pipeline.stream.dealing import Dealer, deal_in_order
from causeway.data_pipeline.stream.reader import ReaderState

STATE_VERSION = 2
_SHARED = ("readers", "seed", "sources", "batches")


@dataclass(frozen=True)
class Layout:
    """What a stream's state must agree with: its readers, seed, sources and rank."""

    readers: int
    seed: int
    datas: Sequence[SourceData]
    rank: int
    world_size: int

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datas]


def rank_state(layout: Layout, batches: int, states: Sequence[ReaderState]) -> dict:
    return {
        "version": STATE_VERSION,
        "readers": layout.readers,
        "seed": layout.seed,
        "sources": layout.names,
        "batches": batches,
        "rank": layout.rank,
        "world_size": layout.world_size,
        "reader_states": [s.encode() for s in states],
    }


def merge_states(states: Sequence[dict]) -> dict:
    """The global state from each rank's `state_dict()` (in any order)."""
    if not states:
        raise ValueError("merge_states needs the state of every rank")
    first = states[0]
    for state in states:
        _check_version(state)
        for key in (*_SHARED, "world_size"):
            if state[key] != first[key]:
                raise ValueError(
                    f"rank states disagree on {key!r}: {state[key]!r} vs {first[key]!r}"
                )
    ranks = sorted(states, key=lambda s: s["rank"])
    if [s["rank"] for s in ranks] != list(range(first["world_size"])):
        raise ValueError(
            f"need one state per rank 0..{first['world_size'] - 1}, got ranks "
            f"{[s['rank'] for s in ranks]}"
        )
    return {
        "version": STATE_VERSION,
        **{key: first[key] for key in _SHARED},
        "reader_states": [reader for s in ranks for reader in s["reader_states"]],
    }


def select(state: dict, layout: Layout) -> tuple[list[ReaderState], int]:
    """(this rank's reader states, batches) from a rank state or a global state."""
    _check_version(state)
    if state["sources"] != layout.names:
        raise ValueError(
            f"state is for datasets {state['sources']}, this stream reads {layout.names}"
        )
    if state["seed"] != layout.seed:
        raise ValueError(
            f"state was saved with seed {state['seed']}, this stream has seed {layout.seed}"
        )
    readers = [ReaderState.decode(r) for r in state["reader_states"]]
    per_rank = layout.readers // layout.world_size
    mine = slice(layout.rank * per_rank, (layout.rank + 1) * per_rank)
    if "rank" in state:
        same = (state["rank"], state["world_size"], state["readers"]) == (
            layout.rank, layout.world_size, layout.readers)  # fmt: skip
        if not same:
            raise ValueError(
                f"a single rank's state (rank {state['rank']} of {state['world_size']}, "
                f"{state['readers']} readers) cannot be loaded by rank {layout.rank} of "
                f"{layout.world_size} with {layout.readers} readers; save the global state "
                "(global_state_dict / merge_states) to resume under another layout"
            )
        return readers, int(state["batches"])
    if state["readers"] != layout.readers:
        readers = redistribute(readers, layout.readers, layout.datas, layout.seed)
    return readers[mine], int(state["batches"])


def redistribute(
    old: Sequence[ReaderState], num_readers: int, datas: Sequence[SourceData], seed: int
) -> list[ReaderState]:
    """States for `num_readers` new readers that together hold exactly the work the `old`
    readers had left."""
    new = [ReaderState.initial(len(datas)) for _ in range(num_readers)]
    for s, data in enumerate(datas):
        dealer = Dealer(data.shards, seed, s)
        final_epoch = max(reader.next_epoch[s] for reader in old)
        pool = []
        for i, reader in enumerate(old):
            pool += reader.queues[s]
            for epoch in range(reader.next_epoch[s], final_epoch):
                pool += dealer.share(epoch, len(old), i)
        pool.sort(key=lambda piece: piece.epoch)  # stable: reader and reading order kept
        for j, share in enumerate(deal_in_order(pool, data.shards, num_readers)):
            new[j].queues[s] = share
            new[j].next_epoch[s] = final_epoch
    for i, reader in enumerate(old):  # keep the totals of the metrics
        target = new[i % num_readers]
        target.tokens = [a + b for a, b in zip(target.tokens, reader.tokens, strict=True)]
        target.documents = [a + b for a, b in zip(target.documents, reader.documents,
                                                  strict=True)]  # fmt: skip
        target.counters.add(reader.counters)
    return new


def _check_version(state: dict) -> None:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"not a data stream state of version {STATE_VERSION}: {state!r:.200}")
