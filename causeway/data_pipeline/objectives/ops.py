"""Index arithmetic for working on many variable-length runs at once (no Python loop per token).

A block holds many documents or examples back to back in one flat array, described by start
offsets and lengths. These helpers turn (starts, lengths) into the flat index arrays that numpy
fancy indexing needs, which is what keeps packing and the objectives at tens of millions of
tokens per second.
"""

from __future__ import annotations

import numpy as np


def offsets(lengths: np.ndarray) -> np.ndarray:
    """Exclusive prefix sums: where each run starts when the runs are laid end to end."""
    out = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=out[1:])
    return out


def within(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., n-1 for every run, concatenated: the position of each element in its run."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(offsets(lengths), lengths)


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n): the indices of all runs' elements."""
    lengths = np.asarray(lengths, dtype=np.int64)
    shift = np.asarray(starts, dtype=np.int64) - offsets(lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(shift, lengths)


def run_ids(lengths: np.ndarray) -> np.ndarray:
    """For every element, the number of the run it belongs to."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def take_runs(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The runs' elements of `flat` back to back, as int64."""
    return flat[ranges(starts, lengths)].astype(np.int64, copy=False)
