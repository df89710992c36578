"""Tensor + sequence parallelism with DTensor (Megatron-style, as torchtitan plans it).

Between blocks the residual stream is split along the sequence (Shard(1)); norms run on
sequence shards; attention and MLP all-gather their input, split heads / hidden units
column-wise and reduce-scatter back to sequence shards row-wise. The output head keeps
the vocabulary sharded: `TensorParallelHead`, set as the model's head, computes the fused
loss across shards without ever gathering the logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from causeway.models.layers import Block
from causeway.models.loss import LossSums, linear_loss_sums


def block_plan(block: Block) -> dict:
    gather_x = PrepareModuleInput(
        input_layouts=(Shard(1), None, None),
        desired_input_layouts=(Replicate(), None, None),
    )
    plan = {
        "attention_norm": SequenceParallel(),
        "attention": gather_x,
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
        "mlp_norm": SequenceParallel(),
        "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "mlp.w1": ColwiseParallel(),
        "mlp.w3": ColwiseParallel(),
        "mlp.w2": RowwiseParallel(output_layouts=Shard(1)),
    }
    if block.cross_attention is not None:
        plan["cross_norm"] = SequenceParallel()
        plan["cross_attention"] = PrepareModuleInput(
            input_layouts=(Shard(1), None, None),
            desired_input_layouts=(Replicate(), None, None),
            input_kwarg_layouts={"memory": Shard(1)},
            desired_input_kwarg_layouts={"memory": Replicate()},
        )
        for name in ("wq", "wk", "wv"):
            plan[f"cross_attention.{name}"] = ColwiseParallel()
        plan["cross_attention.wo"] = RowwiseParallel(output_layouts=Shard(1))
    return plan


def apply_tensor_parallel(model: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Shard `model` (a Decoder, pipeline stage or EncoderDecoder) in place over tp_mesh."""
    top: dict = {}
    if getattr(model, "embed", None) is not None:
        # Vocabulary rows sharded; output sequence-sharded for the first block.
        top["embed"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    if getattr(model, "norm", None) is not None:
        top["norm"] = SequenceParallel()
    if getattr(model, "encoder_norm", None) is not None:
        top["encoder_norm"] = SequenceParallel()
    if getattr(model, "output", None) is not None:
        top["output"] = ColwiseParallel()  # its weight is used by the head, not forward
    parallelize_module(model, tp_mesh, top)
    for stack in ("encoder_layers", "layers"):
        for block in getattr(model, stack, {}).values():
            parallelize_module(block, tp_mesh, block_plan(block))
    model.set_head(TensorParallelHead(tp_mesh))


class TensorParallelHead:
    """The head (models/head.py) over a vocabulary-sharded weight (DTensor Shard(0)) and a
    sequence-sharded input: logits gathered without targets, the fused loss with them."""

    def __init__(self, tp_mesh: DeviceMesh):
        self.tp_mesh = tp_mesh

    def __call__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        z_weight: float = 0.0,
    ) -> torch.Tensor | LossSums:
        tp_mesh = self.tp_mesh
        if not isinstance(hidden, DTensor):
            hidden = DTensor.from_local(hidden, tp_mesh, [Shard(1)])
        full = hidden.redistribute(tp_mesh, [Replicate()])
        local_weight = weight.to_local()
        if targets is None:
            logits = DTensor.from_local(full.to_local() @ local_weight.t(), tp_mesh, [Shard(2)])
            return logits.full_tensor()
        # Each rank's hidden gradient covers only its vocabulary rows: a partial sum.
        local_hidden = full.to_local(grad_placements=[Partial()])
        start = tp_mesh.get_local_rank() * local_weight.shape[0]
        return linear_loss_sums(
            local_hidden, local_weight, targets, loss_mask, z_weight,
            group=tp_mesh.get_group(), vocab_start=start,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"TensorParallelHead(tp={self.tp_mesh.size()})"
