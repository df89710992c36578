"""Activation checkpointing of whole blocks: every block, or every k-th one."""

from __future__ import annotations

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper


def apply_activation_checkpointing(model: nn.Module, mode: str, every: int = 2) -> None:
    """Wrap blocks in place. The wrapper is transparent to state-dict keys."""
    if mode == "none":
        return
    for stack in ("encoder_layers", "layers"):
        blocks = getattr(model, stack, None)
        if blocks is None:
            continue
        for position, (name, block) in enumerate(list(blocks.items())):
            if mode == "full" or position % every == 0:
                blocks[name] = checkpoint_wrapper(block, preserve_rng_state=False)
