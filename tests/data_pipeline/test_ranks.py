"""Several data-parallel ranks (one stream per rank, in one process): reading by share, the
same global batch under every layout, equal batch counts, and resuming under another number
of ranks or readers without repeating or skipping a document."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from causeway.data_pipeline.stream import DataStream, merge_states

from .stream_helpers import all_chunks, chunks_in, global_batches, run_until_epoch, same, take

ARGS = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 24,
        "batch_size": 4, "readers": 4, "seed": 3, "provenance": True}  # fmt: skip


def ranks(data: Path, world_size: int, **kwargs) -> list[DataStream]:
    return [DataStream(data, rank=r, world_size=world_size, **(ARGS | kwargs))
            for r in range(world_size)]  # fmt: skip


def test_ranks_share_each_epoch_without_overlap(uneven: Path) -> None:
    """4 ranks x 2 readers = 8 readers for 7 shards of 1 to 60 documents: every chunk of the
    epoch is read by exactly one rank, and each rank opens only its own shards' bytes."""
    streams = ranks(uneven, 4, batch_size=8, readers=8)
    batches = run_until_epoch(streams, 1)
    per_rank = [chunks_in(batches[r::4]) for r in range(4)]
    assert sum(per_rank, start=type(per_rank[0])()) == all_chunks(uneven, 25)
    assert all(per_rank)  # nobody idle, even with fewer shards than readers
    for a in range(4):
        for b in range(a + 1, 4):
            assert not per_rank[a].keys() & per_rank[b].keys()
    (single,) = ranks(uneven, 1, batch_size=8, readers=8)
    run_until_epoch([single], 1)
    assert all(s.bytes_read < 0.5 * single.bytes_read for s in streams)


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("objective", ["full_lm", "span_corruption"])
def test_global_batch_is_the_same_under_every_layout(
    uneven: Path, world_size: int, objective: str
) -> None:
    """The ranks' rows, in rank order, are the one-process batch (any num_workers too)."""
    reference = take(ranks(uneven, 1, objective=objective)[0], 25)
    split = global_batches([take(s, 25) for s in ranks(uneven, world_size, objective=objective)])
    assert same(split, reference)
    workers = ranks(uneven, world_size, objective=objective, num_workers=2)
    assert same(global_batches([take(s, 25) for s in workers]), reference)


@pytest.mark.parametrize(("world_size", "readers"), [(3, 6), (4, 8), (2, 10)])
def test_one_pass_gives_every_rank_the_same_number_of_batches(
    uneven: Path, world_size: int, readers: int
) -> None:
    """loop=False: uneven shards, and (8, 10) more readers than shards; every rank yields
    exactly N batches (padding when its documents run out), so no collective waits."""
    streams = ranks(uneven, world_size, batch_size=readers, readers=readers, loop=False)
    counts = [sum(1 for _ in s) for s in streams]
    n = streams[0].batches_per_pass()
    assert n and counts == [n] * world_size
    assert all(s.batches_per_pass() == n for s in streams)


@pytest.mark.parametrize(("before", "after"), [(2, 4), (4, 2), (2, 1), (1, 4)])
def test_resume_under_another_number_of_ranks_continues_exactly(
    uneven: Path, before: int, after: int
) -> None:
    """Stop mid-epoch (documents cut between batches included), save the global state,
    continue with another number of ranks: the global batches are those of the run that never
    stopped, so every chunk is read exactly once."""
    reference = take(ranks(uneven, 1)[0], 90)
    old = ranks(uneven, before)
    batches = global_batches([take(s, 37) for s in old])
    assert any(chunk > 0 for _, _, _, chunk in chunks_in(batches))
    state = merge_states([s.state_dict() for s in old])
    new = ranks(uneven, after)
    for s in new:
        s.load_state_dict(state)
    batches += global_batches([take(s, 53) for s in new])
    assert same(batches, reference)
    totals = [sum(s.metrics()["data/tokens/uneven"] for s in group) for group in (old, new)]
    assert totals[1] > totals[0]  # metrics carried over, not restarted


@pytest.mark.parametrize(("before", "after", "steps"), [(4, 6, 50), (6, 4, 37), (4, 1, 61)])
def test_another_number_of_readers_neither_repeats_nor_skips_a_document(
    uneven: Path, before: int, after: int, steps: int
) -> None:
    """Changing data.readers deals the unread pieces afresh: each chunk exactly once."""
    (old,) = ranks(uneven, 1, batch_size=before * 2, readers=before)
    batches = take(old, steps)
    assert 0 < sum(chunks_in(batches).values()) < sum(all_chunks(uneven, 25).values())
    new = ranks(uneven, 2 if after % 2 == 0 else 1, batch_size=after * 2, readers=after)
    for s in new:
        s.load_state_dict(old.global_state_dict())
    batches += run_until_epoch(new, 1)
    assert chunks_in(batches) == all_chunks(uneven, 25)


def test_new_readers_while_readers_are_in_different_epochs(uneven: Path) -> None:
    """Some readers already in epoch 1, others still in epoch 0: after the change, both
    epochs are still read exactly once (the laggards' untouched epoch-1 shares included)."""
    (old,) = ranks(uneven, 1, batch_size=6, readers=6)
    batches: list[dict] = []
    while True:
        batches.append(next(old))
        state = old.global_state_dict()
        next_epochs = {reader[1][0] for reader in state["reader_states"]}
        if next_epochs == {1, 2}:
            break
    new = ranks(uneven, 2, batch_size=4, readers=4)
    for s in new:
        s.load_state_dict(state)
    batches += run_until_epoch(new, 2)
    expected = all_chunks(uneven, 25)
    assert chunks_in(batches, epoch=0) == expected
    assert chunks_in(batches, epoch=1) == expected


def test_readers_must_split_evenly(uneven: Path) -> None:
    with pytest.raises(ValueError, match=r"data.readers \(4\) must be a multiple of the "):
        ranks(uneven, 3, batch_size=12)
    with pytest.raises(ValueError, match=r"data.readers \(3\) must divide data.batch_size"):
        ranks(uneven, 1, readers=3)


@pytest.mark.distributed
def test_gathered_state_from_real_ranks_resumes_on_one(uneven: Path) -> None:
    """Two gloo processes read, gather their state with global_state_dict (all_gather_object);
    one process continues from it: the batches of a run that never stopped."""
    from tests.parallel.harness import run_distributed

    results = run_distributed(
        "tests.data_pipeline.dist_workers:read_then_gather_state", 2, str(uneven), 30, ARGS
    )
    assert results[0]["state"] == results[1]["state"]
    reference = take(ranks(uneven, 1)[0], 50)
    (single,) = ranks(uneven, 1)
    single.load_state_dict(results[0]["state"])
    rows = [torch.tensor(r["provenance"]) for r in results]
    assert torch.equal(torch.cat(rows, dim=1), _provenance(reference[:30]))
    assert same(take(single, 20), reference[30:])


def _provenance(batches: list[dict]) -> torch.Tensor:
    """[batches, rows, 5]: (source, epoch, shard, sample, chunk) of each row's first segment."""
    return torch.stack([b["provenance"][:, 1] for b in batches])
