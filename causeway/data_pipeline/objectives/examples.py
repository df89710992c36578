"""Examples of a whole block of documents, as flat arrays: the currency between the objectives
(`objectives.py`) and the packer (`packing/`), plus the chunking and pair helpers they share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from causeway.data_pipeline.objectives.hash_random import combine, key_of
from causeway.data_pipeline.objectives.ops import offsets, ranges, run_ids, within

Event = tuple[int, str]  # (sample index, counter name)


@dataclass
class DocBlock:
    """Consecutive documents of one piece. `tokens` holds them back to back; for pair data each
    document is its inputs followed by its targets and `input_lengths` says where they meet."""

    source: int
    epoch: int
    shard: int
    piece_stop: int
    samples: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    input_lengths: np.ndarray | None
    first_chunk: int
    next_sample: int
    piece_done: bool
    events: list[Event] = field(default_factory=list)
    first_offset: int = 0  # positions of document 0's first example packed before (a split)


@dataclass
class Examples:
    """Examples made from one DocBlock, in document order. Per example: `doc` (index in the
    block), `chunk` (number within its document) and `raw` (document tokens it consumed).

    Decoder examples fill `tokens`, `targets`, `loss_mask` (flat) with `lengths` and `prefix`;
    encoder-decoder examples fill `inputs`/`input_lengths` and `targets`/`target_lengths`.
    """

    docs: DocBlock
    doc: np.ndarray
    chunk: np.ndarray
    raw: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray | None = None
    tokens: np.ndarray | None = None
    loss_mask: np.ndarray | None = None
    prefix: np.ndarray | None = None
    inputs: np.ndarray | None = None
    input_lengths: np.ndarray | None = None
    target_lengths: np.ndarray | None = None
    starts_cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def starts(self, side: int = 0) -> np.ndarray:
        """Where each example begins in the flat arrays of `side` (0: tokens or inputs,
        1: targets of encoder-decoder examples); one extra entry at the end."""
        if side not in self.starts_cache:
            lengths = (
                self.lengths if self.inputs is None else self.input_lengths,
                self.target_lengths,
            )
            self.starts_cache[side] = np.concatenate([[0], np.cumsum(lengths[side])]).astype(
                np.int64
            )
        return self.starts_cache[side]

    def __len__(self) -> int:
        return len(self.doc)


@dataclass
class Chunks:
    doc: np.ndarray
    chunk: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    keys: np.ndarray


def chunk_block(docs: DocBlock, raw_length: int, seed: int) -> Chunks:
    """`chunk_document` for every document: pieces of raw_length, the last may be shorter,
    pieces under 2 tokens dropped; the first `first_chunk` pieces of document 0 were consumed
    before (the stream resumed inside it)."""
    n = docs.lengths
    count = -(-n // raw_length)
    doc, chunk = run_ids(count), within(count)
    lengths = np.minimum(raw_length, n[doc] - chunk * raw_length)
    keep = lengths >= 2
    if docs.first_chunk:
        keep &= ~((doc == 0) & (chunk < docs.first_chunk))
    doc, chunk, lengths = doc[keep], chunk[keep], lengths[keep]
    starts = offsets(n)[doc] + chunk * raw_length
    keys = key_of(seed, docs.source, docs.epoch, docs.shard, docs.samples[doc], chunk)
    return Chunks(doc, chunk, starts, lengths, keys)


def position_keys(keys: np.ndarray, purpose: int, lengths: np.ndarray) -> np.ndarray:
    """One key per token: (chunk key, purpose, position in chunk)."""
    return combine(np.repeat(combine(keys, purpose), lengths), within(lengths))


def decoder_from_pairs(
    inputs: np.ndarray, input_lengths: np.ndarray, targets: np.ndarray, target_lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`decoder_example` for every pair: read inputs + targets as one sequence, score the
    predictions of target tokens. Returns (tokens, targets, loss_mask, lengths, prefix)."""
    total = input_lengths + target_lengths
    start = offsets(total)
    sequence = np.empty(int(total.sum()), dtype=np.int64)
    sequence[ranges(start, input_lengths)] = inputs
    sequence[ranges(start + input_lengths, target_lengths)] = targets
    lengths = total - 1
    loss_mask = within(lengths) >= np.repeat(input_lengths - 1, lengths)
    return (
        sequence[ranges(start, lengths)],
        sequence[ranges(start + 1, lengths)],
        loss_mask,
        lengths,
        np.minimum(input_lengths, lengths),
    )
