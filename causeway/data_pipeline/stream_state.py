"""The stream's resumable state: one rank's, all ranks' merged, and its redistribution when the
number of readers changes.

Rank state (what `DataStream.state_dict` returns):

    {"version": 1, "rank": r, "world_size": R, "lanes": L, "seed": s, "sources": [names],
     "next_lane": j, "batches": n, "readers": [reader, one per lane]}

Merged state (`merge_states` of every rank's state; identical on all ranks, so it can be
saved once under one key):

    {"version": 1, "world_size": R, "lanes": L, "seed": s, "sources": [names],
     "next_lane": [j per rank], "batches": [n per rank], "readers": [R * L readers, rank-major]}

A reader is a nested list of ints (no dicts, so that torch.distributed.checkpoint stores each
top-level value whole and a state saved by R ranks loads into a template made by R' ranks):

    [queues, next_epoch, mix, tokens, documents, counters, exhausted]
    queues[s] = [[epoch, shard, start, stop, first_chunk], ...]   pieces left of source s
    next_epoch[s], mix[s], tokens[s], documents[s]                 per source
    counters = [bad_samples, bad_shards, missing_shards, sha256_mismatches, rows, positions,
                filled];  exhausted = 0 or 1

Loading a merged state with the same world size and lanes picks the rank's own entry (exact,
bit-for-bit resumption). With another world size or lane count, every old reader's unread
pieces (and the untouched shares of epochs some readers had not started) are pooled in epoch
order and dealt to the new readers, so every document is read exactly once (see
docs/data.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from causeway.data_pipeline.dealing import EPOCH, Dealer, deal_in_order
from causeway.data_pipeline.lane import COUNTERS, initial_lane_state
from causeway.data_pipeline.sources import SourceData

STATE_VERSION = 1
_SHARED = ("world_size", "lanes", "seed", "sources")
_PER_SOURCE = ("next_epoch", "mix", "tokens", "documents")


def encode_reader(reader: dict) -> list:
    """A lane's state as nested lists of ints (see the module docstring)."""
    queues = [[[int(x) for x in piece] for piece in queue] for queue in reader["queues"]]
    per_source = [[int(x) for x in reader[key]] for key in _PER_SOURCE]
    counters = [int(reader["counters"].get(key, 0)) for key in COUNTERS]
    return [queues, *per_source, counters, int(reader["exhausted"])]


def decode_reader(encoded: Sequence) -> dict:
    queues, *per_source, counters, exhausted = encoded
    return {
        "queues": [[list(piece) for piece in queue] for queue in queues],
        **{key: list(values) for key, values in zip(_PER_SOURCE, per_source, strict=True)},
        "counters": dict(zip(COUNTERS, counters, strict=True)),
        "exhausted": bool(exhausted),
    }


def merge_states(states: Sequence[dict]) -> dict:
    """One state for all ranks from each rank's `state_dict()` (in any order)."""
    if not states:
        raise ValueError("merge_states needs the state of every rank")
    first = states[0]
    for state in states:
        _check_version(state)
        for key in _SHARED:
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
        **{k: first[k] for k in _SHARED},
        "next_lane": [s["next_lane"] for s in ranks],
        "batches": [s["batches"] for s in ranks],
        "readers": [reader for s in ranks for reader in s["readers"]],
    }


def select(
    state: dict, rank: int, world_size: int, lanes: int, seed: int, datas: Sequence[SourceData]
) -> tuple[list[dict], int, int]:
    """(lane states, next lane, batches) for `rank` of a stream with this layout."""
    _check_version(state)
    names = [d.name for d in datas]
    if state["sources"] != names:
        raise ValueError(f"state is for datasets {state['sources']}, this stream reads {names}")
    if state["seed"] != seed:
        raise ValueError(f"state was saved with seed {state['seed']}, this stream has seed {seed}")
    same_layout = state["world_size"] == world_size and state["lanes"] == lanes
    readers = [decode_reader(r) for r in state["readers"]]
    if "rank" in state:
        if not same_layout or state["rank"] != rank:
            raise ValueError(
                f"a single rank's state (rank {state['rank']} of {state['world_size']}, "
                f"{state['lanes']} lanes) cannot be loaded by rank {rank} of {world_size} with "
                f"{lanes} lanes; save merge_states(...) of all ranks to allow a resize"
            )
        return readers, int(state["next_lane"]), int(state["batches"])
    if same_layout:
        own = readers[rank * lanes : (rank + 1) * lanes]
        return own, int(state["next_lane"][rank]), int(state["batches"][rank])
    new = redistribute(readers, world_size * lanes, datas, seed)
    return new[rank * lanes : (rank + 1) * lanes], 0, int(state["batches"][0])


def redistribute(
    old: Sequence[dict], num_readers: int, datas: Sequence[SourceData], seed: int
) -> list[dict]:
    """Lane states for `num_readers` new readers that together hold exactly the work the
    `old` readers had left."""
    new = [initial_lane_state(len(datas)) for _ in range(num_readers)]
    for s, data in enumerate(datas):
        dealer = Dealer(data.shards, seed, s)
        final_epoch = max(reader["next_epoch"][s] for reader in old)
        pool = []
        for i, reader in enumerate(old):
            pool += [list(p) for p in reader["queues"][s]]
            for epoch in range(reader["next_epoch"][s], final_epoch):
                pool += dealer.share(epoch, len(old), i)
        pool.sort(key=lambda piece: piece[EPOCH])  # stable: reader and reading order kept
        for j, share in enumerate(deal_in_order(pool, data.shards, num_readers)):
            new[j]["queues"][s] = share
            new[j]["next_epoch"][s] = final_epoch
    for i, reader in enumerate(old):  # keep the totals of the metrics
        target = new[i % num_readers]
        for key in ("tokens", "documents"):
            target[key] = [a + b for a, b in zip(target[key], reader[key], strict=True)]
        for key in COUNTERS:
            target["counters"][key] += reader["counters"].get(key, 0)
    return new


def _check_version(state: dict) -> None:
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"not a data stream state of version {STATE_VERSION}: {state!r:.200}")
