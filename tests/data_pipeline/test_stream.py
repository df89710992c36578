"""DataStream on one rank: determinism, exact resumption, one pass, state format, errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch

from causeway.data_pipeline.stream import DataStream, merge_states

from .stream_helpers import all_chunks, chunks_in, run_until_epoch, same, take

SPAN = {"objective": "span_corruption", "arch": "decoder", "seq_len": 32, "batch_size": 3}


def stream(data: Path, **kwargs) -> DataStream:
    args = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 32,
            "batch_size": 3, "seed": 0, "readers": 3} | kwargs  # fmt: skip
    return DataStream(data, **args)


def test_same_arguments_same_batches_other_seed_other_batches(uneven: Path) -> None:
    first = take(stream(uneven, **SPAN), 12)
    assert same(first, take(stream(uneven, **SPAN), 12))
    assert not same(first, take(stream(uneven, **SPAN, seed=1), 12))


@pytest.mark.parametrize(
    "kwargs",
    [
        SPAN,
        {"objective": "span_corruption", "arch": "encoder_decoder", "seq_len": 48},
        {"objective": "prefix_lm", "readers": 1},
    ],  # fmt: skip
)
def test_resumed_stream_continues_bit_for_bit(uneven: Path, kwargs: dict) -> None:
    """Stop anywhere (often inside a document), save, load into a new stream: the next batches
    are those of the uninterrupted run; the state survives torch.save + weights_only load."""
    reference = take(stream(uneven, **kwargs), 40)
    for stop in (1, 7, 23):
        first = stream(uneven, **kwargs)
        assert same(take(first, stop), reference[:stop])
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)
        buffer.seek(0)
        resumed = stream(uneven, **kwargs)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        assert same(take(resumed, 40 - stop), reference[stop:])


def test_state_round_trips_through_distributed_checkpoint(uneven: Path, tmp_path: Path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    reference = take(stream(uneven, **SPAN), 20)
    first = stream(uneven, **SPAN)
    take(first, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({"data": first.global_state_dict()}, checkpoint_id=tmp_path)
        resumed = stream(uneven, **SPAN)
        template = {"data": resumed.global_state_dict()}
        dcp.load(template, checkpoint_id=tmp_path)
    resumed.load_state_dict(template["data"])
    assert same(take(resumed, 11), reference[9:])


def test_one_pass_reads_every_chunk_once_and_ends(uneven: Path) -> None:
    """loop=False with one rank: every chunk of the epoch exactly once, then the end; a
    reader's row is empty only once that reader has run dry (every later row empty too)."""
    batches = list(stream(uneven, loop=False, provenance=True))
    assert chunks_in(batches) == all_chunks(uneven, 33)
    empty = torch.stack([b["segment_ids"].amax(dim=1) == 0 for b in batches])  # [batch, reader]
    assert not empty[-1].all() and empty.any()
    for reader in range(3):
        first = int(empty[:, reader].int().argmax()) if empty[:, reader].any() else len(batches)
        assert empty[first:, reader].all()


def test_looping_stream_moves_on_to_reshuffled_epochs(uneven: Path) -> None:
    s = stream(uneven, provenance=True)
    batches = run_until_epoch([s], 2)
    expected = all_chunks(uneven, 33)
    assert chunks_in(batches, epoch=0) == expected
    assert chunks_in(batches, epoch=1) == expected

    def shard_order(epoch: int) -> list[int]:
        order = []
        for b in batches:
            for _, ep, shard, *_ in b["provenance"].reshape(-1, 6).tolist():
                if ep == epoch and shard not in order:
                    order.append(shard)
        return order

    assert shard_order(0) != shard_order(1)


def test_metrics_count_what_the_batches_hold(uneven: Path) -> None:
    s = stream(uneven, provenance=True)
    batches = take(s, 30)
    metrics = s.metrics()
    chunks = chunks_in(batches, epoch=None)
    assert metrics["data/documents/uneven"] == sum(1 for (_, _, _, c) in chunks if c == 0)
    filled = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    # full_lm: n tokens give n - 1 positions; a chunk is counted once its first part is in a
    # batch, so a chunk split at the last batch's end (one per reader) may be partly ahead.
    ahead = metrics["data/tokens/uneven"] - (filled + len(chunks))
    assert 0 <= ahead <= 3 * 32
    assert metrics["data/batches"] == 30 and metrics["data/padding_fraction"] == 0.0  # split
    problems = ("bad_samples", "bad_shards", "missing_shards", "sha256_mismatches")
    assert {metrics[f"data/{k}"] for k in problems} == {0}


def test_layout_errors(uneven: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"readers \(2\) must divide .* valid: \[1, 3\]"):
        stream(uneven, readers=2)
    with pytest.raises(ValueError, match="fewer than its 200 readers"):
        stream(uneven, batch_size=200, readers=200, world_size=2)
    with pytest.raises(ValueError, match="mtf.*pair"):
        stream(uneven, objective="mtf")
    with pytest.raises(KeyError, match="available"):
        stream(uneven, split="test")
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        stream(tmp_path)


def test_states_only_load_where_they_belong(uneven: Path) -> None:
    s = stream(uneven)
    take(s, 3)
    with pytest.raises(ValueError, match="seed 0"):
        stream(uneven, seed=5).load_state_dict(s.state_dict())
    ranks = [stream(uneven, rank=r, world_size=2, batch_size=4, readers=2) for r in range(2)]
    with pytest.raises(ValueError, match="cannot be loaded by rank 1"):
        ranks[1].load_state_dict(ranks[0].state_dict())
    with pytest.raises(ValueError, match="one state per rank"):
        merge_states([ranks[0].state_dict()])
