"""Several data-parallel ranks (one stream per rank, in one process): disjoint reading, equal
batch counts, and resizing without repeating or skipping a document."""

from __future__ import annotations

from pathlib import Path

import pytest

from causeway.data_pipeline.stream import DataStream, merge_states

from .stream_helpers import all_chunks, chunks_in, run_until_epoch, take

ARGS = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 24,
        "batch_size": 2, "seed": 3, "provenance": True}  # fmt: skip


def ranks(data: Path, world_size: int, lanes: int = 2, **kwargs) -> list[DataStream]:
    return [DataStream(data, rank=r, world_size=world_size, lanes=lanes, **(ARGS | kwargs))
            for r in range(world_size)]  # fmt: skip


def test_ranks_share_each_epoch_without_overlap(uneven: Path) -> None:
    """4 ranks x 2 lanes = 8 readers for 7 shards of 1 to 60 documents: every chunk of the
    epoch is read by exactly one rank."""
    streams = ranks(uneven, 4)
    batches = run_until_epoch(streams, 1)
    per_rank = [chunks_in(batches[r::4]) for r in range(4)]
    assert sum(per_rank, start=type(per_rank[0])()) == all_chunks(uneven, 25)
    assert all(per_rank)  # nobody idle, even with fewer shards than readers
    for a in range(4):
        for b in range(a + 1, 4):
            assert not per_rank[a].keys() & per_rank[b].keys()


@pytest.mark.parametrize(("world_size", "lanes"), [(3, 2), (4, 2), (2, 5)])
def test_one_pass_gives_every_rank_the_same_number_of_batches(
    uneven: Path, world_size: int, lanes: int
) -> None:
    """loop=False: uneven shards, and (4 x 2, 2 x 5) more readers than shards; every rank
    yields exactly N batches (padding when its documents run out), so no collective waits."""
    streams = ranks(uneven, world_size, lanes, loop=False)
    counts = [sum(1 for _ in s) for s in streams]
    n = streams[0].batches_per_pass()
    assert n and counts == [n] * world_size
    assert all(s.batches_per_pass() == n for s in streams)


@pytest.mark.parametrize(("before", "after", "steps"), [(2, 3, 150), (3, 2, 97), (2, 1, 61)])
def test_resize_neither_repeats_nor_skips_a_document(
    uneven: Path, before: int, after: int, steps: int
) -> None:
    """Stop mid-epoch (documents cut between batches included), merge every rank's state,
    continue with another number of ranks: each chunk of the epoch is read exactly once."""
    old = ranks(uneven, before)
    batches = [batch for _ in range(steps) for batch in (next(s) for s in old)]
    assert 0 < sum(chunks_in(batches).values()) < sum(all_chunks(uneven, 25).values())
    assert any(chunk > 0 for _, _, _, chunk in chunks_in(batches))
    state = merge_states([s.state_dict() for s in old])
    new = ranks(uneven, after)
    for s in new:
        s.load_state_dict(state)
    batches += run_until_epoch(new, 1)
    assert chunks_in(batches) == all_chunks(uneven, 25)
    totals = [sum(s.metrics()["data/tokens/uneven"] for s in group) for group in (old, new)]
    assert totals[1] > totals[0]  # metrics carried over, not restarted


def test_resize_while_readers_are_in_different_epochs(uneven: Path) -> None:
    """Some readers already in epoch 1, others still in epoch 0: after the resize, both
    epochs are still read exactly once (the laggards' untouched epoch-1 shares included)."""
    old = ranks(uneven, 3)
    batches: list[dict] = []
    while True:
        batches += [next(s) for s in old]
        state = merge_states([s.state_dict() for s in old])
        next_epochs = {reader[1][0] for reader in state["readers"]}
        if next_epochs == {1, 2}:
            break
    new = ranks(uneven, 2)
    for s in new:
        s.load_state_dict(state)
    batches += run_until_epoch(new, 2)
    expected = all_chunks(uneven, 25)
    assert chunks_in(batches, epoch=0) == expected
    assert chunks_in(batches, epoch=1) == expected


def test_resize_lanes_too(uneven: Path) -> None:
    old = ranks(uneven, 2, lanes=3)
    batches = [b for _ in range(40) for b in (next(s) for s in old)]
    state = merge_states([s.state_dict() for s in old])
    new = ranks(uneven, 2, lanes=1)
    for s in new:
        s.load_state_dict(state)
    batches += run_until_epoch(new, 1)
    assert chunks_in(batches) == all_chunks(uneven, 25)


def test_same_layout_merged_state_resumes_exactly(uneven: Path) -> None:
    reference = [take(s, 30) for s in ranks(uneven, 3)]
    old = ranks(uneven, 3)
    for s in old:
        take(s, 11)
    state = merge_states([s.state_dict() for s in reversed(old)])
    for r, s in enumerate(ranks(uneven, 3)):
        s.load_state_dict(state)
        got = take(s, 19)
        assert all(
            all(a[k].equal(b[k]) for k in a) for a, b in zip(got, reference[r][11:], strict=True)
        )


@pytest.mark.distributed
def test_gathered_state_from_real_ranks_resizes_to_one(uneven: Path) -> None:
    """Two gloo processes read, gather their state with global_state_dict (all_gather_object);
    one process continues from it: every chunk of the epoch exactly once."""
    from collections import Counter

    from tests.parallel.harness import run_distributed

    args = ARGS | {"lanes": 2}
    results = run_distributed(
        "tests.data_pipeline.dist_workers:read_then_gather_state", 2, str(uneven), 60, args
    )
    assert results[0]["state"] == results[1]["state"]
    seen: Counter = Counter()
    for result in results:
        seen.update({tuple(key[:4]): key[4] for key in result["seen"]})
    (single,) = ranks(uneven, 1)
    single.load_state_dict(results[0]["state"])
    after = chunks_in(run_until_epoch([single], 1))
    assert seen + after == all_chunks(uneven, 25)
