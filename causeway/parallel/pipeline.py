"""Pipeline parallelism with `torch.distributed.pipelining`: split by layers.

Each stage is the plain model with the layers it does not own deleted; the first stage
embeds tokens, the last applies the final norm and the fused loss. Packing inputs
(positions, segment ids, prefix lengths) and targets reach every stage as keyword
arguments, chunked into micro-batches by the schedule.

Tied embeddings: the last stage keeps its own copy of `embed` for the output head.
The two copies start equal (`sync_tied_embedding`) and stay equal because their
gradients are summed across the pair before each optimizer step (Megatron's rule).
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from causeway.models.head import Head
from causeway.models.loss import LossSums

SCHEDULES = {
    "gpipe": ScheduleGPipe,
    "1f1b": Schedule1F1B,
    "interleaved_1f1b": ScheduleInterleaved1F1B,
}


def stage_ids(pp_rank: int, pp: int, virtual_stages: int) -> list[int]:
    """Looped assignment: rank r holds stages r, r + pp, r + 2 pp, ..."""
    return [pp_rank + v * pp for v in range(virtual_stages)]


def make_stage(model: nn.Module, stage: int, n_stages: int) -> nn.Module:
    """A copy of `model` (on the meta device) pruned to the layers of `stage`."""
    part = copy.deepcopy(model)
    n_layers = len(part.layers)
    per_stage = n_layers // n_stages
    keep = {str(i) for i in range(stage * per_stage, (stage + 1) * per_stage)}
    for name in list(part.layers.keys()):
        if name not in keep:
            del part.layers[name]
    first, last = stage == 0, stage == n_stages - 1
    tied = part.output is None
    part.takes_tokens = first
    if not first and not (last and tied):
        part.embed = None
    if not last:
        part.norm = None
        part.output = None
    return part


class StackedLossHead:
    """The last stage's head (models/head.py): the loss sums of the head it wraps, as one
    tensor [loss, ce, z, tokens], since pipeline stages pass tensors, not named tuples.
    Only element 0 carries a gradient; `PipelineLoss` unstacks it."""

    def __init__(self, inner: Head):
        self.inner = inner

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        sums = self.inner(*args, **kwargs)
        return torch.stack([sums.loss, sums.ce, sums.z, sums.tokens.to(sums.loss.dtype)])

    def __repr__(self) -> str:
        return f"StackedLossHead({self.inner!r})"


def stack_head_output(part: nn.Module) -> None:
    """Make the last stage return one tensor: wrap its head (once) in `StackedLossHead`."""
    if isinstance(part.head, StackedLossHead):
        raise RuntimeError("the last stage's head is stacked already")
    part.set_head(StackedLossHead(part.head))


class PipelineLoss:
    """The schedule's loss_fn: sums from the last stage over the global normaliser.

    It also records the detached sums of every micro-batch for the step's metrics. The
    schedule's first step also calls it once on shape-inference outputs, before the real
    micro-batches: `step_sums` keeps only the last `n_microbatches` records.
    """

    def __init__(self, n_microbatches: int):
        self.n_microbatches = n_microbatches
        self.normalizer: torch.Tensor | float = 1.0
        self.sums: list[LossSums] = []

    def step_sums(self) -> list[LossSums]:
        return self.sums[-self.n_microbatches :]

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sums = LossSums(*output.unbind())
        self.sums.append(LossSums(*(t.detach() for t in sums)))
        return sums.loss / self.normalizer


def build_pipeline(model: nn.Module, pp_mesh: DeviceMesh, virtual_stages: int, schedule: str):
    """The stage modules this rank holds, their stage ids and the number of stages."""
    pp, rank = pp_mesh.size(), pp_mesh.get_local_rank()
    n_stages = pp * virtual_stages
    if schedule == "interleaved_1f1b" and virtual_stages < 2:
        raise ValueError("interleaved_1f1b needs parallel.virtual_stages >= 2")
    if schedule != "interleaved_1f1b" and virtual_stages != 1:
        raise ValueError(f"pp_schedule {schedule} runs one stage per rank: set virtual_stages 1")
    ids = stage_ids(rank, pp, virtual_stages)
    parts = [make_stage(model, i, n_stages) for i in ids]
    return parts, ids, n_stages


def make_schedule(parts, ids, n_stages, pp_mesh, schedule, n_microbatches, device, loss_fn):
    group = pp_mesh.get_group()
    stages = [
        PipelineStage(p, i, n_stages, device, group=group) for p, i in zip(parts, ids, strict=True)
    ]
    cls = SCHEDULES[schedule]
    # scale_grads=False: the loss is already divided by the global token count.
    target = stages if schedule == "interleaved_1f1b" else stages[0]
    return cls(target, n_microbatches=n_microbatches, loss_fn=loss_fn, scale_grads=False)


def tied_embedding_group(mesh: DeviceMesh) -> dist.ProcessGroup | None:
    """The group {first stage, last stage} of this rank's (dp, tp) coordinate."""
    grid = mesh.mesh  # (pp, dp_replicate, dp_shard, tp)
    mine = None
    me = dist.get_rank()
    flat = grid.reshape(grid.shape[0], -1)
    for column in range(flat.shape[1]):
        ranks = [int(flat[0, column]), int(flat[-1, column])]
        group = dist.new_group(ranks)
        if me in ranks:
            mine = group
    return mine


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def tied_embedding(parts: list[nn.Module]) -> nn.Parameter | None:
    """This rank's copy of a tied embedding that another pipeline rank also holds."""
    for part in parts:
        if part.cfg.tie_embeddings and part.embed is not None:
            return part.embed.weight
    return None


def sync_tied_embedding(parts, group, first_rank: int) -> None:
    weight = tied_embedding(parts)
    if weight is not None and group is not None:
        with torch.no_grad():
            dist.broadcast(local_tensor(weight), src=first_rank, group=group)


def reduce_tied_gradients(parts, group) -> None:
    weight = tied_embedding(parts)
    if weight is not None and group is not None and weight.grad is not None:
        grad = weight.grad
        if hasattr(grad, "placements") and grad.placements != weight.placements:
            # Under TP the embedding's backward leaves a Replicate gradient on a
            # vocabulary-sharded weight; give both copies the weight's layout first.
            grad = grad.redistribute(weight.device_mesh, weight.placements)
            weight.grad = grad
        dist.all_reduce(local_tensor(grad), group=group)
