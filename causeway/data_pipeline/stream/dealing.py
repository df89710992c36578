"""Dealing each epoch's shards to the readers: deterministic, balanced, and explicit.

A stream has a fixed number of *readers* (`data.readers`), independent of how many
data-parallel ranks share them. A *piece* is a run of consecutive samples of one shard. Each
epoch of each source is dealt afresh from (seed, source, epoch):

1. Pieces: every non-empty shard is one piece; when there are fewer shards than readers, each
   shard is cut into ceil(readers / shards) runs of nearly equal document counts, so that no
   reader is left without data.
2. Order: the pieces are shuffled by a generator seeded with (seed, source, epoch).
3. Dealing: in that order, each piece goes to the reader with the fewest tokens so far (ties:
   lowest reader number). Readers therefore get nearly equal token counts, whatever the shard
   sizes, and each reader reads its pieces in the shuffled order.

Because a reader's work is an explicit list of pieces, it can be saved, and pooled and dealt
again when the number of readers changes (see `state.redistribute`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from causeway.data_pipeline.shards.sources import ShardInfo


class Piece(NamedTuple):
    """Samples [start, stop) of one shard in one epoch. `first_chunk` > 0 when the first
    document was cut between batches and its earlier chunks were read before;
    `first_offset` > 0 when that chunk itself was split and its first positions were packed."""

    epoch: int
    shard: int
    start: int
    stop: int
    first_chunk: int = 0
    first_offset: int = 0

    def tokens(self, shards: Sequence[ShardInfo]) -> float:
        """Estimated tokens: the piece's share of its shard's documents times its tokens."""
        shard = shards[self.shard]
        return shard.tokens * (self.stop - self.start) / max(shard.documents, 1)


def epoch_pieces(shards: Sequence[ShardInfo], epoch: int, num_readers: int) -> list[Piece]:
    """The pieces of one epoch in shard order (before shuffling)."""
    non_empty = [i for i, s in enumerate(shards) if s.documents > 0]
    cuts = math.ceil(num_readers / len(non_empty)) if 0 < len(non_empty) < num_readers else 1
    pieces = []
    for i in non_empty:
        docs = shards[i].documents
        bounds = np.linspace(0, docs, min(cuts, docs) + 1).round().astype(int).tolist()
        pieces += [Piece(epoch, i, a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return pieces


def deal(
    shards: Sequence[ShardInfo], seed: int, source: int, epoch: int, num_readers: int
) -> list[list[Piece]]:
    """Every reader's pieces of `epoch`, in reading order (see the module docstring)."""
    pieces = epoch_pieces(shards, epoch, num_readers)
    order = np.random.default_rng([seed, source, epoch]).permutation(len(pieces))
    return deal_in_order([pieces[i] for i in order], shards, num_readers)


def deal_in_order(
    pieces: Sequence[Piece], shards: Sequence[ShardInfo], num_readers: int
) -> list[list[Piece]]:
    """Give each piece, in the order given, to the reader with the fewest tokens so far."""
    shares: list[list[Piece]] = [[] for _ in range(num_readers)]
    heap = [(0.0, reader) for reader in range(num_readers)]
    for piece in pieces:
        load, reader = heapq.heappop(heap)
        shares[reader].append(piece)
        heapq.heappush(heap, (load + piece.tokens(shards), reader))
    return shares


class Dealer:
    """`deal` with a small cache: every reader of a process asks for the same epochs."""

    def __init__(self, shards: Sequence[ShardInfo], seed: int, source: int) -> None:
        self.shards = shards
        self.seed = seed
        self.source = source
        self._cache: dict[tuple[int, int], list[list[Piece]]] = {}

    def share(self, epoch: int, num_readers: int, reader: int) -> list[Piece]:
        key = (epoch, num_readers)
        if key not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = deal(self.shards, self.seed, self.source, epoch, num_readers)
        return list(self._cache[key][reader])

    def share_tokens(self, epoch: int, num_readers: int, reader: int) -> float:
        return sum(p.tokens(self.shards) for p in self.share(epoch, num_readers, reader))
