"""DataStream with real DataLoader worker processes: the same batches as in one process, and
exact resumption when the number of workers changes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from causeway.data_pipeline.stream import DataStream

from .stream_helpers import same, take

ARGS = {"split": "train", "objective": "span_corruption", "arch": "encoder_decoder",
        "seq_len": 48, "batch_size": 2, "seed": 5, "readers": 2}  # fmt: skip


@pytest.fixture(autouse=True)
def _quiet_worker_count_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*worker processes in total.*")
        yield


def stream(data: Path, workers: int, **kwargs) -> DataStream:
    return DataStream(data, num_workers=workers, **(ARGS | kwargs))


def test_workers_change_nothing_and_resume_across_worker_counts(uneven: Path) -> None:
    reference = take(stream(uneven, 0), 40)
    two = stream(uneven, 2)
    assert same(take(two, 9), reference[:9])  # readers 0 and 1 in two processes
    one = stream(uneven, 1)
    one.load_state_dict(two.state_dict())
    assert same(take(one, 12), reference[9:21])
    none = stream(uneven, 0)
    none.load_state_dict(one.state_dict())
    assert same(take(none, 8), reference[21:29])
    two_again = stream(uneven, 2)
    two_again.load_state_dict(none.state_dict())
    assert same(take(two_again, 11), reference[29:])
    assert two_again.metrics() == _metrics_after(uneven, 40)


def _metrics_after(data: Path, n: int) -> dict:
    s = stream(data, 0)
    take(s, n)
    return s.metrics()


def test_one_pass_with_workers_equals_one_pass_without(uneven: Path) -> None:
    expected = list(stream(uneven, 0, loop=False, arch="decoder", seq_len=64))
    got = list(stream(uneven, 2, loop=False, arch="decoder", seq_len=64))
    assert same(got, expected)
