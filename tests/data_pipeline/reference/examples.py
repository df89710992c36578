"""The two shapes a training example takes, and the adapters that build them from (inputs, targets).

Every objective first produces an (inputs, targets) pair (or, for full LM and masked LM, an
`Example` directly); the architecture then decides how the pair is read: a decoder reads
inputs followed by targets as one sequence, an encoder-decoder reads them on separate stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TokenIds = Sequence[int] | np.ndarray


@dataclass(frozen=True)
class Example:
    """One decoder example: position i reads `tokens[i]` and must predict `targets[i]`.

    `loss_mask[i]` says whether position i counts in the loss. The first `prefix_length`
    positions form the input prefix (0 for full LM); a model with prefix visibility lets them
    see each other, a causal model ignores it.
    """

    tokens: list[int]
    targets: list[int]
    loss_mask: list[bool]
    prefix_length: int

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if len(self.targets) != n or len(self.loss_mask) != n:
            raise ValueError(
                f"tokens, targets and loss_mask must have equal lengths, got "
                f"{n}, {len(self.targets)}, {len(self.loss_mask)}"
            )
        if not 0 <= self.prefix_length <= n:
            raise ValueError(f"prefix_length {self.prefix_length} outside [0, {n}]")

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Seq2SeqExample:
    """One encoder-decoder example; the decoder input is `targets` shifted right at packing."""

    inputs: list[int]
    targets: list[int]


def as_list(ids: TokenIds) -> list[int]:
    """Plain Python ints, whatever came in (list, tuple or numpy array)."""
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False).tolist()
    return [int(i) for i in ids]


def decoder_example(inputs: TokenIds, targets: TokenIds) -> Example:
    """Read `inputs + targets` as one sequence; only predictions of target tokens are scored.

    Position i predicts sequence[i + 1], so the loss starts at the last input position (which
    predicts the first target). `prefix_length = len(inputs)` makes exactly the inputs the prefix.
    """
    inputs, targets = as_list(inputs), as_list(targets)
    if not targets:
        raise ValueError("decoder_example needs at least one target token")
    sequence = inputs + targets
    n = len(sequence) - 1
    first_scored = len(inputs) - 1
    loss_mask = [i >= first_scored for i in range(n)]
    return Example(sequence[:-1], sequence[1:], loss_mask, prefix_length=min(len(inputs), n))


def seq2seq_example(inputs: TokenIds, targets: TokenIds) -> Seq2SeqExample:
    """Inputs go to the encoder, targets to the decoder."""
    targets = as_list(targets)
    if not targets:
        raise ValueError("seq2seq_example needs at least one target token")
    return Seq2SeqExample(as_list(inputs), targets)
