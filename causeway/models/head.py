"""The output head: final hidden states and the output weight -> logits or loss sums.

A model ends with one head, `model.head`, replaced only through `model.set_head(head)`:

- `OutputHead` (set by the model itself): one device, logits without targets, the fused
  chunked loss (`loss.linear_loss_sums`) with them;
- `TensorParallelHead` (`causeway/parallel/tensor_parallel.py`): the same over a
  vocabulary-sharded weight, set by tensor parallelism;
- `StackedLossHead` (`causeway/parallel/pipeline.py`): wraps the head of a pipeline's last
  stage so that it returns one tensor, set once by the pipeline.

A head is a plain callable, not an `nn.Module`: it holds no parameters or buffers (the
weight is passed in: the embedding when tied, `output` otherwise), so the state dict and
the checkpoints are the same whichever head a model has.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from causeway.models.loss import LossSums, linear_loss_sums


class Head(Protocol):
    def __call__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        z_weight: float = 0.0,
    ) -> torch.Tensor | LossSums: ...


class OutputHead:
    """The single-device head: logits without targets, fused loss sums with them."""

    def __call__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        z_weight: float = 0.0,
    ) -> torch.Tensor | LossSums:
        if targets is None:
            return F.linear(hidden, weight)
        return linear_loss_sums(hidden, weight, targets, loss_mask, z_weight)

    def __repr__(self) -> str:
        return "OutputHead()"


class HeadMixin:
    """For the models: the head they end with (`head`, read-only), swapped by `set_head`."""

    _head: Head

    @property
    def head(self) -> Head:
        return self._head

    def set_head(self, head: Head) -> None:
        """The one way to replace the head (tensor parallelism, the pipeline's last stage).
        Refuses an `nn.Module`, whose parameters or buffers would change the state dict."""
        if isinstance(head, nn.Module):
            raise TypeError(f"a head holds no parameters or buffers; got the module {head!r}")
        self._head = head
