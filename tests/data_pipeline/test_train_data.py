"""causeway/train/data.py: from a run config to resumable train and fixed validation batches."""

from __future__ import annotations

from pathlib import Path

from causeway.config import load_config
from causeway.train.data import build_data

from .stream_helpers import global_batches, same, take


def config(data: Path, *extra: str):
    return load_config(
        "tiny-nd-mlm",
        ["data.source=path", f"data.path={data}", "data.seq_len=64", "data.batch_size=2",
         "model.vocab_size=512", "model.max_seq_len=64", *extra],
    )  # fmt: skip


def test_train_stream_resumes_and_validation_repeats(uneven: Path) -> None:
    cfg = config(uneven)
    data = build_data(cfg)
    reference = take(build_data(cfg).train, 12)
    assert same(take(data.train, 5), reference[:5])
    state = data.stream.state_dict()
    again = build_data(cfg)
    again.stream.load_state_dict(state)
    assert same(take(again.train, 7), reference[5:])
    assert data.validation(3) and same(data.validation(3), data.validation(3))
    assert data.stream.metrics()["data/tokens/uneven"] > 0


def test_data_parallel_ranks_get_their_rows_of_the_global_batch(uneven: Path) -> None:
    cfg = config(uneven)
    whole = build_data(cfg)
    rank0, rank1 = (build_data(cfg, rank=r, world_size=2) for r in range(2))
    assert same(global_batches([take(rank0.train, 3), take(rank1.train, 3)]), take(whole.train, 3))
    assert next(rank0.train)["tokens"].shape[0] == 1  # batch 2 over 2 ranks
    assert same(global_batches([rank0.validation(2), rank1.validation(2)]), whole.validation(2))
