"""Sharded data parallelism with FSDP2 (`fully_shard`): per block, then the root.

HSDP when dp_replicate > 1 (replicate x shard mesh). Gradients are summed, not
averaged (divide factor 1): the trainer already divides the loss by the number of loss
tokens in the global batch, which is what makes every layout match one process.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard


def mixed_precision(precision: str, device_type: str) -> MixedPrecisionPolicy:
    """bf16 compute with fp32 gradient reduction on GPUs; fp32 elsewhere."""
    if device_type == "cuda" and precision in ("bf16", "auto"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def apply_fsdp(model: nn.Module, dp_mesh: DeviceMesh, mp: MixedPrecisionPolicy) -> None:
    """Shard each block, then the root (embedding, norms, output)."""
    for stack in ("encoder_layers", "layers"):
        blocks = list(getattr(model, stack, {}).values())
        for index, block in enumerate(blocks):
            # The last block is resharded by the root right away, so keep it gathered.
            last = stack == "layers" and index == len(blocks) - 1
            fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=not last)
    fully_shard(model, mesh=dp_mesh, mp_policy=mp)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            # Plain SUM collectives: gloo has neither AVG nor PREMUL_SUM.
            module.set_force_sum_reduction_for_comms(True)
