"""Counter-based random numbers: every random choice is a pure function of what it is about.

The streaming reader must give bit-identical batches however the work is split (ranks, readers,
DataLoader workers) and wherever a run is resumed. A stateful generator would have to be saved
and would depend on the order in which documents were processed; instead each draw is the
splitmix64 hash of a key built from (seed, source, epoch, shard, sample, chunk, purpose,
position). Hashing is vectorised over whole blocks of documents, so it is also fast.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53


def mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijection of uint64 whose outputs look independent."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        return x ^ (x >> np.uint64(31))


def combine(key: np.ndarray | int, value: np.ndarray | int) -> np.ndarray:
    """A new key from an old key and one more integer (broadcasting like numpy)."""
    key = np.asarray(key, dtype=np.uint64)
    value = np.asarray(value).astype(np.uint64)
    with np.errstate(over="ignore"):
        return mix(key * _GOLDEN + value)


def key_of(*parts: np.ndarray | int) -> np.ndarray:
    """The key of a tuple of integers (each may be an array; shapes broadcast)."""
    key = np.asarray(0x5EED, dtype=np.uint64)
    for part in parts:
        key = combine(key, part)
    return key


def uniform(key: np.ndarray) -> np.ndarray:
    """Floats in [0, 1) with 53 random bits, one per key."""
    return (np.asarray(key, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def below(key: np.ndarray, bound: np.ndarray | int) -> np.ndarray:
    """Integers in [0, bound) (int64), one per key (relative bias below bound / 2**53)."""
    return np.minimum((uniform(key) * bound).astype(np.int64), np.asarray(bound) - 1)
