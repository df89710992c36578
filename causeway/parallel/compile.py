"""`torch.compile` per block (opt-in). `Module.compile()` compiles in place, so the
parameter names, and with them checkpoint keys, stay those of the plain model."""

from __future__ import annotations

from torch import nn


def apply_compile(model: nn.Module) -> None:
    for stack in ("encoder_layers", "layers"):
        for block in getattr(model, stack, {}).values():
            block.compile(fullgraph=False)
