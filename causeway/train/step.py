"""One optimizer step over a global batch, for any layout (one process included).

The loss of every micro-batch on every rank is divided by the number of loss tokens in
the whole global batch, and gradients are summed across data-parallel ranks: that is
exactly the gradient of one process over the global batch, whatever the layout.

A step reads nothing back to the host: it returns device tensors (`StepResult`) that the
trainer reads (`materialize`) only on the steps it logs, so the host can queue the next
step while the device still works on this one. The one exception is the trainer's gate
(`guard.py`), which reads three numbers per step to decide whether to apply it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, Partial, Replicate

from causeway.config import RunConfig
from causeway.models import model_inputs
from causeway.models.loss import LossSums
from causeway.parallel.apply import ParallelModel
from causeway.parallel.pipeline import reduce_tied_gradients
from causeway.train.distributed import all_reduce_sum

SEGMENT_KEYS = (
    ("tokens", "segment_ids"),
    ("enc_tokens", "enc_segment_ids"),
    ("dec_tokens", "dec_segment_ids"),
)
STAGE_KWARGS = ("positions", "segment_ids", "prefix_lengths", "targets", "loss_mask")


@dataclass(frozen=True)
class StepSettings:
    """What a step takes from the run's configuration, read once by the trainer."""

    arch: str
    micro_batch_size: int
    z_loss: float  # weight of the z-loss term
    grad_clip: float  # largest global gradient norm; 0 = no clipping
    precision: str
    device: torch.device

    @classmethod
    def from_config(cls, cfg: RunConfig, device: torch.device) -> StepSettings:
        """Build after the layout: it fills in data.micro_batch_size when unset."""
        t = cfg.train
        micro = cfg.data.micro_batch_size
        return cls(cfg.model.arch, micro, t.z_loss, t.grad_clip, t.precision, device)


@dataclass(frozen=True)
class StepFigures:
    loss: float  # mean cross-entropy per loss token (z-loss excluded)
    z_loss: float
    grad_norm: float
    tokens: int  # tokens processed by the whole job (every position of every row)
    loss_tokens: int


@dataclass(frozen=True)
class StepResult:
    """A step's figures as the device holds them; reading them waits for the step."""

    sums: torch.Tensor  # job-wide [ce, z] sums over the global batch
    loss_tokens: torch.Tensor  # the normaliser: loss tokens in the global batch (>= 1)
    grad_norm: torch.Tensor
    tokens: int  # counted from shapes on the host, so known without the device
    applied: bool = True  # False: the gate skipped the update

    def materialize(self) -> StepFigures:
        """One device-to-host copy for all the figures. float64 holds the fp32 sums
        exactly, so they are the values `float()` of each tensor would give."""
        n = self.loss_tokens.reshape(1)
        values = torch.cat([self.sums.double(), n.double(), self.grad_norm.reshape(1)])
        ce, z, n, norm = values.tolist()
        return StepFigures(ce / n, z / n, norm, self.tokens, int(n))


def autocast_for(precision: str, device: torch.device):
    """bf16 autocast where asked for, or under 'auto' on GPUs that support it."""
    if precision == "fp32":
        return nullcontext()
    if precision == "auto" and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def rows(batch: dict[str, torch.Tensor], start: int, count: int) -> dict[str, torch.Tensor]:
    return {k: v[start : start + count] for k, v in batch.items()}


def local_batch(pm: ParallelModel, batch: dict, device: torch.device) -> dict:
    """This data-parallel rank's rows (the stream reads by share), padded for sequence
    parallelism and on the device."""
    if pm.dims.tp > 1:
        batch = pad_sequences(batch, pm.dims.tp)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def pad_sequences(batch: dict[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
    """Pad every [B, T] tensor to a multiple of `multiple` positions (sequence
    parallelism needs equal shards), e.g. the paper's 626 tokens to 628 under tp 4.

    Padding is segment 0 with no loss, which the mask rule already keeps apart from every
    document; rows that had no segment ids get them (1 = the row's one document).
    """
    out = dict(batch)
    for tokens, segments in SEGMENT_KEYS:
        if tokens in out and segments not in out:
            out[segments] = torch.ones_like(out[tokens], dtype=torch.int32)
    for key, value in out.items():
        if key != "prefix_lengths" and value.ndim == 2 and value.shape[1] % multiple:
            missing = multiple - value.shape[1] % multiple
            out[key] = torch.nn.functional.pad(value, (0, missing), value=0)
    return out


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    keys = ("tokens", "enc_tokens", "dec_tokens")
    return sum(v.numel() for k, v in batch.items() if k in keys)


def forward_sums(part, batch: dict, settings: StepSettings) -> LossSums:
    inputs = model_inputs(batch, settings.arch)
    targets, loss_mask = batch["targets"], batch["loss_mask"]
    return part(**inputs, targets=targets, loss_mask=loss_mask, z_weight=settings.z_loss)


def run_micro_batches(pm, batch, normalizer, settings: StepSettings, train: bool) -> LossSums:
    """Forward (and backward when training) over micro-batches; returns summed sums."""
    total = None
    size, micro = next(iter(batch.values())).shape[0], settings.micro_batch_size
    for start in range(0, size, micro):
        if train:
            defer_gradient_sync(pm.parts[0], last=start + micro >= size)
        with autocast_for(settings.precision, settings.device):
            sums = forward_sums(pm.parts[0], rows(batch, start, micro), settings)
        if train:
            sums.total(normalizer).backward()
        detached = LossSums(*(t.detach() for t in sums))
        total = (
            detached
            if total is None
            else LossSums(*(a + b for a, b in zip(total, detached, strict=True)))
        )
    return total


def defer_gradient_sync(part, last: bool) -> None:
    """Under FSDP, reduce-scatter gradients once per step, after the last micro-batch,
    rather than after each (the pipeline schedules do the same), and keep parameters
    gathered from one micro-batch's backward to the next one's forward, which would
    otherwise gather them again: per block, n + 1 all-gathers a step instead of 2n.
    The gradients are unsharded until the last micro-batch anyway (4 bytes a parameter),
    so the gathered bf16 parameters add half as much again, only between micro-batches."""
    if isinstance(part, FSDPModule):
        part.set_requires_gradient_sync(last)
        part.set_reshard_after_backward(last)


def run_pipeline(pm, batch, normalizer, settings: StepSettings, train: bool) -> LossSums:
    """One pass of the pipeline schedule; sums are non-zero on the last stage only.
    The schedule cuts its own micro-batches, so settings.micro_batch_size is not used."""
    loss = pm.pipeline_loss
    loss.normalizer, loss.sums = normalizer, []
    kwargs = {k: batch[k] for k in STAGE_KWARGS if k in batch}
    args = (batch["tokens"],) if pm.has_first_stage else ()
    run = pm.schedule.step if train else pm.schedule.eval
    with autocast_for(settings.precision, settings.device):
        run(*args, target=batch["targets"], z_weight=settings.z_loss, **kwargs)
    sums = loss.step_sums()
    if not sums:
        zero = torch.zeros((), device=settings.device)
        return LossSums(zero, zero, zero, zero)
    return LossSums(*(torch.stack(column).sum() for column in zip(*sums, strict=True)))


def forward_backward(pm, batch, normalizer, settings: StepSettings, *, train: bool) -> LossSums:
    """`train` says whether this pass also runs the backward (not part of the settings:
    the same run both trains and evaluates)."""
    run = run_pipeline if pm.schedule is not None else run_micro_batches
    return run(pm, batch, normalizer, settings, train)


def grad_norm_and_clip(pm: ParallelModel, max_norm: float, device: torch.device) -> torch.Tensor:
    """Global gradient norm (float64, on the device) across shards, replicas and pipeline
    stages; clip when max_norm > 0. Nothing is read back to the host.

    A tied embedding's copy on the last pipeline stage holds the same (summed) gradient
    as the first stage's, so it is counted once.
    """
    every = [p for p in pm.parameters() if p.grad is not None]
    sum_pending_gradients(every)
    grads = [p.grad for p in counted_parameters(pm) if p.grad is not None]
    squared = local_squared_norm(grads, pm.dims.world_size // pm.dims.pp, device)
    if pm.mesh is not None:
        # Every rank's part is weighted so that the sum over all ranks counts each entry
        # once: one all-reduce for the whole job, however many tensors and stages.
        dist.all_reduce(squared)
    norm = squared.sqrt()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(every, max_norm, norm.float())
    return norm


def local_squared_norm(
    grads: list[torch.Tensor], stage_ranks: int, device: torch.device
) -> torch.Tensor:
    """This rank's part of the sum of squared gradient entries over the job.

    A pipeline stage's `stage_ranks` ranks hold `shard_count(g)` distinct pieces of a
    gradient, each on stage_ranks / shard_count of them (its Replicate mesh dims and those
    it is not laid out on). Weighting local squares by shard_count / stage_ranks counts
    every piece once in a sum over all ranks, where making each tensor's norm whole
    (`full_tensor`) took one all-reduce per tensor.

    In float64: fp32 norms of the same gradient computed whole and as two shards differed
    by 5e-5 relative here, more than any layout should change it.
    """
    total = torch.zeros((), dtype=torch.float64, device=device)
    for grad in grads:
        local = grad.to_local() if isinstance(grad, DTensor) else grad
        squares = torch.linalg.vector_norm(local, dtype=torch.float64).square()
        total += squares * (shard_count(grad) / stage_ranks)
    return total


def shard_count(grad: torch.Tensor) -> int:
    """Into how many distinct pieces the mesh cuts a gradient (1 for a plain tensor)."""
    if not isinstance(grad, DTensor):
        return 1
    count = 1
    for size, placement in zip(grad.device_mesh.shape, grad.placements, strict=True):
        if placement.is_partial():
            raise ValueError(f"a {placement} gradient has no norm until it is summed")
        if not placement.is_replicate():  # Shard, or FSDP's _StridedShard (not a Shard)
            count *= size
    return count


@torch.no_grad()
def sum_pending_gradients(params: list[torch.Tensor]) -> None:
    """Finish, in place, the gradient sums DTensor left pending (`Partial`): one
    all-reduce per mesh dim for all such gradients of a layout together.

    Under sequence parallelism a replicated weight (a norm's gain) gets a partial
    gradient on each tp rank. Left so, the norm would sum each tensor on its own, and the
    optimizer then again, three times per tensor (27 all-reduces under tp 2, tiny model).
    """
    pending: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        grad = p.grad
        if isinstance(grad, DTensor) and any(x.is_partial() for x in grad.placements):
            pending.setdefault((grad.device_mesh, grad.placements, grad.dtype), []).append(p)
    for (mesh, placements, _), group in pending.items():
        sum_partial_gradients(group, mesh, placements)


def sum_partial_gradients(params: list[torch.Tensor], mesh, placements) -> None:
    """Sum gradients of one layout as one flat buffer, then store each back whole."""
    pieces = [p.grad.to_local() for p in params]
    flat = torch.cat([piece.reshape(-1) for piece in pieces])
    for dim, placement in enumerate(placements):
        if placement.is_partial():
            if type(placement) is not Partial or placement.reduce_op != "sum":
                raise ValueError(f"cannot finish a {placement} gradient, only Partial(sum)")
            dist.all_reduce(flat, group=mesh.get_group(dim))
    whole = tuple(Replicate() if x.is_partial() else x for x in placements)
    summed = flat.split([piece.numel() for piece in pieces])
    for p, piece, total in zip(params, pieces, summed, strict=True):
        piece.copy_(total.view_as(piece))
        shape, stride = p.grad.shape, p.grad.stride()
        p.grad = DTensor.from_local(piece, mesh, whole, shape=shape, stride=stride)


def counted_parameters(pm: ParallelModel):
    duplicate = None
    if pm.dims.pp > 1 and not pm.has_first_stage:
        for part in pm.parts:
            if part.cfg.tie_embeddings and part.embed is not None:
                duplicate = part.embed.weight
    return [p for p in pm.parameters() if p is not duplicate]


def reduce_sums(pm: ParallelModel, sums: LossSums) -> torch.Tensor:
    """Job-wide [ce, z] sums: over data-parallel ranks, and from the last stage."""
    packed = torch.stack([sums.ce.float(), sums.z.float()])
    all_reduce_sum(packed, pm.group("dp"))
    all_reduce_sum(packed, pm.group("pp"))
    return packed


class StepGate(Protocol):
    """Asked by `train_step` between the backward and the optimizer (the trainer's is
    `guard.StepGuard`): it may change the sums (test faults) and may skip the update."""

    def after_backward(self, parameters: list[torch.Tensor], sums: LossSums) -> LossSums: ...

    def allow(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool: ...


def train_step(
    pm: ParallelModel,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    settings: StepSettings,
    gate: StepGate | None = None,
) -> StepResult:
    tokens = count_tokens(batch) * pm.dims.dp  # every rank has as many rows
    local = local_batch(pm, batch, settings.device)
    normalizer = all_reduce_sum(local["loss_mask"].sum().float(), pm.group("dp")).clamp(min=1)
    sums = forward_backward(pm, local, normalizer, settings, train=True)
    reduce_tied_gradients(pm.parts, pm.tied_group)
    if gate is not None:
        sums = gate.after_backward(list(pm.parameters()), sums)
    norm = grad_norm_and_clip(pm, settings.grad_clip, settings.device)
    totals = reduce_sums(pm, sums)
    # A skipped step leaves weights and optimizer state exactly as they were.
    applied = gate is None or gate.allow(totals[0] / normalizer, norm)
    if applied:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(totals, normalizer, norm, tokens, applied)


@torch.no_grad()
def evaluate(pm: ParallelModel, batches, settings: StepSettings) -> dict[str, float]:
    """Mean loss per loss token over the given validation batches (each in one pass,
    without z-loss), read from the device once, at the end."""
    for part in pm.parts:
        part.eval()
    # [ce, loss tokens] in float64, which adds up the fp32 values as Python floats would.
    totals = torch.zeros(2, dtype=torch.float64, device=settings.device)
    for batch in batches:
        local = local_batch(pm, batch, settings.device)
        normalizer = all_reduce_sum(local["loss_mask"].sum().float(), pm.group("dp"))
        rows_here = next(iter(local.values())).shape[0]
        whole = replace(settings, micro_batch_size=rows_here, z_loss=0.0)
        sums = forward_backward(pm, local, normalizer.clamp(min=1), whole, train=False)
        totals += torch.stack([reduce_sums(pm, sums)[0], normalizer]).double()
    for part in pm.parts:
        part.train()
    ce, tokens = totals.tolist()
    return {"val_loss": ce / max(tokens, 1.0), "val_tokens": int(tokens)}
