from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from .reference.reader import iter_documents, iter_samples, read_index, shard_order


def _shard_sequence(data_dir: Path, seed: int, epoch: int) -> list[str]:
    """Shard names in the order one epoch visits them, read from the samples themselves."""
    names: list[str] = []
    for sample in iter_samples(data_dir, "train", seed, epoch):
        name = Path(sample["__url__"]).name
        if not names or names[-1] != name:
            names.append(name)
    return names


def test_shard_order_is_a_seeded_permutation_per_epoch() -> None:
    assert sorted(shard_order(7, seed=0, epoch=0)) == list(range(7))
    assert shard_order(7, seed=0, epoch=0) == shard_order(7, seed=0, epoch=0)
    orders = {tuple(shard_order(7, seed=0, epoch=e)) for e in range(5)}
    assert len(orders) > 1
    assert shard_order(7, seed=0, epoch=0) != shard_order(7, seed=1, epoch=0)


def test_reader_visits_shards_in_the_epoch_order(small_builtin: Path) -> None:
    shards = read_index(small_builtin)["splits"]["train"]["shards"]
    assert len(shards) >= 4
    for epoch in (0, 1):
        expected = [shards[i]["name"] for i in shard_order(len(shards), 0, epoch)]
        assert _shard_sequence(small_builtin, seed=0, epoch=epoch) == expected


def test_same_seed_same_documents(small_builtin: Path) -> None:
    a = [d.tolist() for d in islice(iter_documents(small_builtin, "train", seed=4), 50)]
    b = [d.tolist() for d in islice(iter_documents(small_builtin, "train", seed=4), 50)]
    assert a == b
    assert all(isinstance(d, list) and d for d in a)


def test_documents_are_int64_arrays(small_builtin: Path) -> None:
    doc = next(iter_documents(small_builtin, "val", seed=0))
    assert isinstance(doc, np.ndarray) and doc.dtype == np.int64 and doc.ndim == 1


def test_loop_continues_with_the_next_epoch(small_builtin: Path) -> None:
    n = read_index(small_builtin)["splits"]["val"]["documents"]
    looped = [d.tolist() for d in islice(iter_documents(small_builtin, "val", 0, loop=True), 3 * n)]
    for epoch in range(3):
        once = [d.tolist() for d in iter_documents(small_builtin, "val", 0, epoch=epoch)]
        assert looped[epoch * n : (epoch + 1) * n] == once
    assert len(list(iter_documents(small_builtin, "val", 0))) == n  # without loop it ends


def test_unknown_split_lists_the_available_ones(small_builtin: Path) -> None:
    with pytest.raises(KeyError, match="available"):
        next(iter_documents(small_builtin, "test", seed=0))


def test_directory_without_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        next(iter_documents(tmp_path, "train", seed=0))
