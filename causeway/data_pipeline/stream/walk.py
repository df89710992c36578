"""`ShardWalk`: one reader's walk through one source, pieces of shards -> blocks of documents.

Bad data never stops the walk. A shard that cannot be opened, a truncated or corrupt tar, a
sample without decodable ids, a shard with fewer samples than its index entry, or a sha256 that
differs from index.json: each is logged with the shard's URL, recorded as an *event* at its
sample position (the stream counts it once the batches have moved past it, so counts survive
resumption exactly) and skipped. Two epochs in a row without a single readable document end the
run with an error naming the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from causeway.data_pipeline.objectives.examples import DocBlock, Event
from causeway.data_pipeline.shards.samples import decode_samples
from causeway.data_pipeline.shards.sources import SourceData
from causeway.data_pipeline.shards.tar_reader import ShardError, TarSamples
from causeway.data_pipeline.shards.urls import open_url
from causeway.data_pipeline.stream.dealing import Dealer, Piece

logger = logging.getLogger("causeway.data")

BLOCK_DOCS = 4096


class ShardWalk:
    """Reads the pieces in `queue` and, when it runs dry, deals itself the next epoch."""

    def __init__(
        self,
        data: SourceData,
        dealer: Dealer,
        reader: int,
        num_readers: int,
        queue: list[Piece],
        next_epoch: int,
        loop: bool,
        verify: bool,
        block_bytes: int,
    ) -> None:
        self.data = data
        self.dealer = dealer
        self.reader = reader
        self.num_readers = num_readers
        self.queue = [Piece(*p) for p in queue]
        self.next_epoch = next_epoch
        self.loop = loop
        self.verify = verify
        self.block_bytes = block_bytes
        self.current: Piece | None = None
        self._tar: TarSamples | None = None
        self._first_read = False
        self._docs_since_deal = 0
        self._barren_epochs = 0
        self._closed_bytes = 0
        # Told (shard, sample) before each read: a worker process posts it for the parent.
        self.watch: Callable[[int, int], None] | None = None

    @property
    def bytes_read(self) -> int:
        """Shard bytes this walk has read in this process (not carried through resumption)."""
        return self._closed_bytes + (self._tar.bytes_read if self._tar is not None else 0)

    @property
    def exhausted(self) -> bool:
        return self.current is None and not self.queue and not self._may_deal()

    def next_block(self) -> DocBlock | None:
        """The next block (possibly without documents, carrying only events); None when a
        finite reader has read its epoch."""
        while self.current is None:
            if not self.queue:
                if not self._may_deal():
                    return None
                self._deal_next()
                continue
            self.current = self.queue.pop(0)
            block = self._open()
            if block is not None:
                return block
        return self._read()

    def position(self) -> list[Piece]:
        """Pieces left, starting where reading stands (the current piece from its next sample)."""
        head = []
        if self.current is not None and self._tar is not None:
            rest = self.current._replace(start=self._tar.next_index, first_chunk=0, first_offset=0)
            head = [rest]
        return head + list(self.queue)

    def close(self) -> None:
        if self._tar is not None:
            self._closed_bytes += self._tar.bytes_read
            self._tar.close()
            self._tar = None

    # -- epochs -------------------------------------------------------------------------------

    def _may_deal(self) -> bool:
        return self.loop or self.next_epoch == 0

    def _deal_next(self) -> None:
        if self._docs_since_deal == 0 and self.next_epoch > 0:
            self._barren_epochs += 1
            if self._barren_epochs >= 2:
                raise RuntimeError(
                    f"dataset {self.data.name!r} ({self.data.path}): two epochs in a row without "
                    f"one readable document for reader {self.reader}; see the warnings above"
                )
        else:
            self._barren_epochs = 0
        self._docs_since_deal = 0
        self.queue = self.dealer.share(self.next_epoch, self.num_readers, self.reader)
        self.next_epoch += 1

    # -- pieces -------------------------------------------------------------------------------

    def _open(self) -> DocBlock | None:
        """Open the current piece's shard and move to its first sample; on failure, a block
        with the event and the piece given up."""
        piece = self.current
        if self.watch is not None:
            self.watch(piece.shard, piece.start)
        shard = self.data.shards[piece.shard]
        hash_it = self.verify and shard.sha256 is not None and piece.stop == shard.documents
        try:
            self._tar = TarSamples(open_url(shard.url), shard.url, hash_bytes=hash_it)
        except (OSError, ValueError) as e:
            return self._give_up(ShardError(shard.url, f"cannot open ({e})", unreadable=True))
        self._first_read = True
        error = self._tar.skip(piece.start)
        if error is not None:
            return self._give_up(error)
        return None

    def _read(self) -> DocBlock:
        piece, tar = self.current, self._tar
        first = tar.next_index
        if self.watch is not None:
            self.watch(piece.shard, first)
        wanted = min(piece.stop - first, BLOCK_DOCS)
        samples, error = tar.read(wanted, self.block_bytes)
        kept, parts, lengths, inputs, bad = decode_samples(samples, self.data)
        events = [self._bad_sample(index, why) for index, why in bad]
        done = error is not None or tar.next_index >= piece.stop or not samples
        if error is not None:
            events.append(self._shard_event(error, first + len(samples)))
        elif not samples:
            events.append(self._short_shard(first))
        elif done:
            events += self._check_hash()
        block = DocBlock(
            source=-1,
            epoch=piece.epoch,
            shard=piece.shard,
            piece_stop=piece.stop,
            samples=np.asarray(kept, dtype=np.int64),
            tokens=np.frombuffer(b"".join(parts), dtype=self.data.dtype),
            lengths=np.asarray(lengths, dtype=np.int64),
            input_lengths=self._input_lengths(inputs),
            first_chunk=self._first_chunk(kept),
            first_offset=self.current.first_offset if self._starts_piece(kept) else 0,
            next_sample=tar.next_index,
            piece_done=done,
            events=events,
        )  # fmt: skip
        self._first_read = False
        self._docs_since_deal += len(kept)
        if done:
            self.close()
            self.current = None
        return block

    def _input_lengths(self, inputs: list[int]) -> np.ndarray | None:
        return np.asarray(inputs, dtype=np.int64) if self.data.format == "pairs" else None

    def _starts_piece(self, kept: list[int]) -> bool:
        return bool(self._first_read and kept and kept[0] == self.current.start)

    def _first_chunk(self, kept: list[int]) -> int:
        """Chunks of the piece's first document already consumed before (a resumed run)."""
        return self.current.first_chunk if self._starts_piece(kept) else 0

    def _give_up(self, error: ShardError) -> DocBlock:
        piece = self.current
        self.close()
        self.current = None
        return DocBlock(
            source=-1, epoch=piece.epoch, shard=piece.shard, piece_stop=piece.stop,
            samples=np.zeros(0, np.int64), tokens=np.zeros(0, self.data.dtype),
            lengths=np.zeros(0, np.int64), input_lengths=None, first_chunk=0,
            next_sample=piece.stop, piece_done=True,
            events=[self._shard_event(error, piece.start)],
        )  # fmt: skip

    # -- events -------------------------------------------------------------------------------

    def _bad_sample(self, index: int, why: str) -> Event:
        logger.warning("%s: sample %d skipped: %s", self._url(), index, why)
        return (index, "bad_samples")

    def _shard_event(self, error: ShardError, at: int) -> Event:
        unreadable = error.unreadable or (self._tar is not None and self._tar.bytes_read == 0)
        what = "unreadable, skipped" if unreadable else "rest of the shard skipped"
        logger.warning("%s (%s)", error, what)
        return (at, "missing_shards" if unreadable else "bad_shards")

    def _short_shard(self, at: int) -> Event:
        shard = self.data.shards[self.current.shard]
        if self._tar is not None and self._tar.bytes_read == 0:
            logger.warning("%s: empty or missing, skipped", shard.url)
            return (at, "missing_shards")
        logger.warning(
            "%s: ended after %d of %d documents (truncated?)", shard.url, at, shard.documents
        )
        return (at, "bad_shards")

    def _check_hash(self) -> list[Event]:
        shard = self.data.shards[self.current.shard]
        try:
            digest = self._tar.hexdigest()
        except ShardError as e:
            return [self._shard_event(e, self.current.stop)]
        if digest is None or digest == shard.sha256:
            return []
        logger.warning(
            "%s: sha256 %s does not match index.json (%s); the shard changed after it was "
            "prepared", shard.url, digest, shard.sha256,
        )  # fmt: skip
        return [(self.current.stop, "sha256_mismatches")]

    def _url(self) -> str:
        return self.data.shards[self.current.shard].url if self.current else self.data.path
