"""Packing example blocks into rows, with numpy writing the rows.

Two rules, both deterministic:

- **In order, splitting** (`RowPacker(split=True)`, for full_lm and masked_lm on decoders,
  whose examples are position-wise): examples fill each row in order; one that does not fit
  is split, its first part closing the row and its rest opening the next as a segment of its
  own (so no position ever attends across documents). Rows are full except at the stream's
  end.
- **In order, whole** (`RowPacker(split=False)`, the reference rule): an example joins the
  current row if it fits (and the row has fewer than `max_segments` segments), otherwise the
  row is closed; an example never spans two rows.
- **Best fit** (`best_fit_rows`, for atomic examples: prefix LM, span corruption, mtf,
  encoder-decoder pairs): a window of examples, largest first, each into the open row with the
  least room that still holds it, a new row when none does.

Deciding where each example goes is a short Python loop over example lengths; copying tokens
is done once per batch and block with fancy indexing.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

import numpy as np

from causeway.data_pipeline.objectives.examples import Examples
from causeway.data_pipeline.objectives.ops import ranges

_NO_LIMIT = 1 << 62


class Placement(NamedTuple):
    """Examples `index` of one block placed in `rows` at `offsets[side]`, as segment `numbers`
    of their rows; `lengths[side]` the positions placed of each. `skip`: positions of the first
    example placed before (the rest of a split example)."""

    examples: Examples
    index: np.ndarray
    rows: np.ndarray
    offsets: list[np.ndarray]
    numbers: np.ndarray
    lengths: list[np.ndarray]
    skip: int = 0

    def filled(self) -> int:
        """Positions these examples fill (both sides for encoder-decoder examples)."""
        return sum(int(side.sum()) for side in self.lengths)

    def shifted(self, first_row: int) -> Placement:
        """The same placement with its rows moved down by `first_row`."""
        return self._replace(rows=self.rows + first_row)

    def sources(self, side: int) -> np.ndarray | slice:
        """Where, in the block's flat arrays of `side`, the positions placed are: a slice for
        consecutive examples (only the first may be skipped into, the last cut), else the
        flat indices."""
        index = self.index
        if len(index) and (len(index) == 1 or bool((np.diff(index) == 1).all())):
            first = int(self.examples.starts(side)[index[0]]) + self.skip
            return slice(first, first + int(self.lengths[side].sum()))
        starts = self.examples.starts(side)[index].copy()
        if len(starts):
            starts[0] += self.skip
        return ranges(starts, self.lengths[side])


def _placement(examples: Examples, index: list[int], rows: list[int], offsets: list[list[int]],
               numbers: list[int], lengths: list[list[int]], skip: int) -> Placement:  # fmt: skip
    return Placement(
        examples, np.asarray(index, dtype=np.int64), np.asarray(rows, dtype=np.int64),
        [np.asarray(o, dtype=np.int64) for o in offsets], np.asarray(numbers, dtype=np.int64),
        [np.asarray(n, dtype=np.int64) for n in lengths], skip,
    )  # fmt: skip


class RowPacker:
    """Places examples row by row, in order; `place` stops when the batch is full."""

    def __init__(
        self, batch_size: int, capacity: tuple[int, ...], max_segments: int | None,
        split: bool = False,
    ) -> None:  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if split and len(capacity) != 1:
            raise ValueError("only single-sided (decoder) examples can be split")
        self.batch_size = batch_size
        self.capacity = capacity
        self.max_segments = max_segments or _NO_LIMIT
        self.split = split
        self.row = 0
        self.used = [0] * len(capacity)
        self.segments = 0
        self.parts: list[Placement] = []

    @property
    def full(self) -> bool:
        return self.row >= self.batch_size

    @property
    def empty(self) -> bool:
        return not self.parts

    def place(
        self, examples: Examples, sizes: list[list[int]], start: int, stop: int, skip: int = 0
    ) -> tuple[int, int]:
        """Place examples[start:stop] (sizes[k][i]: size of example i on side k; the first
        has `skip` positions placed already). Returns (the first example not wholly placed,
        its positions placed): (stop, 0) unless the batch filled up. Only decoder examples
        (one side) are ever split."""
        if len(self.capacity) == 1:
            return self._place_single(examples, sizes[0], start, stop, skip)
        run = _Run(examples, skip, len(self.capacity))
        row, used, segments = self.row, self.used, self.segments
        capacity, limit, batch = self.capacity, self.max_segments, self.batch_size
        i = start
        while i < stop:
            size = [s[i] for s in sizes]
            fits = all(u + n <= c for u, n, c in zip(used, size, capacity, strict=True))
            if not fits or segments >= limit:
                if segments == 0:
                    raise ValueError(f"example of size {size} does not fit a row of size "
                                     f"{capacity}")  # fmt: skip
                row, used, segments = row + 1, [0] * len(capacity), 0
                if row == batch:
                    break
                continue
            segments += 1
            run.add(i, row, used, segments, size)
            used = [u + n for u, n in zip(used, size, strict=True)]
            i += 1
        if run.index:
            self.parts.append(run.placement())
        self.row, self.used, self.segments = row, used, segments
        return i, 0

    def _place_single(
        self, examples: Examples, sizes: list[int], start: int, stop: int, skip: int
    ) -> tuple[int, int]:
        """`place` for decoder examples (one side), the hot loop: plain ints and lists."""
        capacity, limit, batch, split = (
            self.capacity[0],
            self.max_segments,
            self.batch_size,
            self.split,
        )
        row, used, segments = self.row, self.used[0], self.segments
        index: list[int] = []
        rows: list[int] = []
        offsets: list[int] = []
        numbers: list[int] = []
        lengths: list[int] = []
        first_skip = skip
        i = start
        while i < stop:
            size = sizes[i] - skip
            if used + size > capacity or segments >= limit:
                room = capacity - used
                if split and segments < limit and room > 0:  # its first part ends the row
                    _add(index, rows, offsets, numbers, lengths, i, row, used, segments + 1, room)
                    self.parts.append(_placement(examples, index, rows, [offsets], numbers,
                                                 [lengths], first_skip))  # fmt: skip
                    skip += room
                    first_skip, index, rows, offsets, numbers, lengths = skip, [], [], [], [], []
                elif segments == 0:
                    raise ValueError(f"example of size {[size]} does not fit a row of size "
                                     f"{self.capacity}")  # fmt: skip
                row, used, segments = row + 1, 0, 0
                if row == batch:
                    break
                continue
            segments += 1
            _add(index, rows, offsets, numbers, lengths, i, row, used, segments, size)
            used += size
            i, skip = i + 1, 0
        if index:
            self.parts.append(_placement(examples, index, rows, [offsets], numbers, [lengths],
                                         first_skip))  # fmt: skip
        self.row, self.used, self.segments = row, [used], segments
        return i, (skip if i < stop else 0)

    def take_placements(self) -> list[Placement]:
        """The placements of the batch, and a fresh start for the next one."""
        parts = self.parts
        self.parts, self.row, self.used, self.segments = [], 0, [0] * len(self.capacity), 0
        return parts


def _add(index, rows, offsets, numbers, lengths, i, row, offset, number, length) -> None:
    index.append(i)
    rows.append(row)
    offsets.append(offset)
    numbers.append(number)
    lengths.append(length)


class _Run:
    """Examples of one block being placed, collected for one `Placement`."""

    def __init__(self, examples: Examples, skip: int, sides: int) -> None:
        self.examples, self.skip = examples, skip
        self.index: list[int] = []
        self.rows: list[int] = []
        self.offsets: list[list[int]] = [[] for _ in range(sides)]
        self.numbers: list[int] = []
        self.lengths: list[list[int]] = [[] for _ in range(sides)]

    def add(self, i: int, row: int, used: list[int], number: int, size: list[int]) -> None:
        self.index.append(i)
        self.rows.append(row)
        self.numbers.append(number)
        for k, (u, n) in enumerate(zip(used, size, strict=True)):
            self.offsets[k].append(u)
            self.lengths[k].append(n)

    def placement(self) -> Placement:
        return _placement(self.examples, self.index, self.rows, self.offsets, self.numbers,
                          self.lengths, self.skip)  # fmt: skip


def best_fit_rows(
    items: list[tuple[Examples, int]], capacity: tuple[int, ...], max_segments: int | None
) -> list[list[tuple[Examples, int, list[int]]]]:
    """Rows of (block, example, offsets per side) for a window of atomic examples: largest
    first (ties: window order), each into the open row with the least room left on the first
    side that holds it on every side, else into a new row. Rows in the order they opened.

    Open rows are kept sorted by their first side's use, so the best candidate is found by
    bisection; only when the other side or the segment limit refuses it is the search walked
    down to rows with more room."""
    limit = max_segments or _NO_LIMIT
    sizes = [[int(s[i]) for s in _sides(ex)] for ex, i in items]
    order = sorted(range(len(items)), key=lambda k: (-sizes[k][0], -sum(sizes[k]), k))
    rows: list[list[tuple[Examples, int, list[int]]]] = []
    used: list[list[int]] = []
    keys: list[tuple[int, int]] = []  # (first side used, row) of rows that may take more
    for k in order:
        size = sizes[k]
        if any(b > c for b, c in zip(size, capacity, strict=True)):
            raise ValueError(f"example of size {size} does not fit a row of size {capacity}")
        best = None
        at = bisect.bisect_right(keys, (capacity[0] - size[0], len(rows))) - 1
        while at >= 0:
            r = keys[at][1]
            if all(a + b <= c for a, b, c in zip(used[r], size, capacity, strict=True)):
                best = r
                break
            at -= 1
        if best is None:
            rows.append([])
            used.append([0] * len(capacity))
            best = len(rows) - 1
        else:
            del keys[at]
        rows[best].append((items[k][0], items[k][1], list(used[best])))
        used[best] = [a + b for a, b in zip(used[best], size, strict=True)]
        if len(rows[best]) < limit:
            bisect.insort(keys, (used[best][0], best))
    return rows


def rows_to_placements(rows: list[list[tuple[Examples, int, list[int]]]]) -> list[Placement]:
    """Placements (one per block, rows numbered from 0) of rows made by `best_fit_rows`."""
    runs: dict[int, _Run] = {}
    for r, row in enumerate(rows):
        for number, (ex, i, offs) in enumerate(row, start=1):
            run = runs.setdefault(id(ex), _Run(ex, 0, len(offs)))
            run.add(i, r, offs, number, [int(s[i]) for s in _sides(ex)])
    return [run.placement() for run in runs.values()]


def _sides(examples: Examples) -> list[np.ndarray]:
    if examples.inputs is None:
        return [examples.lengths]
    return [examples.input_lengths, examples.target_lengths]
