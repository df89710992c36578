"""One optimizer step over a global batch, for any layout (one process included).

The loss of every micro-batch on every rank is divided by the number of loss tokens in
the whole global batch, and gradients are summed across data-parallel ranks: that is
exactly the gradient of one process over the global batch, whatever the layout.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule

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


@dataclass
class StepResult:
    loss: float  # mean cross-entropy per loss token (z-loss excluded)
    z_loss: float
    grad_norm: float
    tokens: int  # tokens processed by the whole job (every position of every row)
    loss_tokens: int


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
    """This data-parallel rank's rows of the global batch (tp/pp peers get the same)."""
    total = next(iter(batch.values())).shape[0]
    share = total // pm.dims.dp
    local = rows(batch, pm.local_rank("dp") * share, share) if pm.dims.dp > 1 else batch
    if pm.dims.tp > 1:
        local = pad_sequences(local, pm.dims.tp)
    return {k: v.to(device, non_blocking=True) for k, v in local.items()}


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


def forward_sums(part, batch: dict, arch: str, z_weight: float) -> LossSums:
    inputs = model_inputs(batch, arch)
    targets, loss_mask = batch["targets"], batch["loss_mask"]
    return part(**inputs, targets=targets, loss_mask=loss_mask, z_weight=z_weight)


def run_micro_batches(pm, batch, normalizer, *, arch, micro, z_weight, precision, device, train):
    """Forward (and backward when training) over micro-batches; returns summed sums."""
    total = None
    size = next(iter(batch.values())).shape[0]
    for start in range(0, size, micro):
        if train:
            defer_gradient_sync(pm.parts[0], last=start + micro >= size)
        with autocast_for(precision, device):
            sums = forward_sums(pm.parts[0], rows(batch, start, micro), arch, z_weight)
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
    rather than after each (the pipeline schedules do the same)."""
    if isinstance(part, FSDPModule):
        part.set_requires_gradient_sync(last)


def run_pipeline(pm, batch, normalizer, *, z_weight, precision, device, train) -> LossSums:
    """One pass of the pipeline schedule; sums are non-zero on the last stage only."""
    loss = pm.pipeline_loss
    loss.normalizer, loss.sums = normalizer, []
    kwargs = {k: batch[k] for k in STAGE_KWARGS if k in batch}
    args = (batch["tokens"],) if pm.has_first_stage else ()
    run = pm.schedule.step if train else pm.schedule.eval
    with autocast_for(precision, device):
        run(*args, target=batch["targets"], z_weight=z_weight, **kwargs)
    sums = loss.step_sums()
    if not sums:
        zero = torch.zeros((), device=device)
        return LossSums(zero, zero, zero, zero)
    return LossSums(*(torch.stack(column).sum() for column in zip(*sums, strict=True)))


def forward_backward(pm, batch, normalizer, *, arch, micro, z_weight, precision, device, train):
    if pm.schedule is not None:
        return run_pipeline(
            pm, batch, normalizer, z_weight=z_weight, precision=precision, device=device,
            train=train,
        )  # fmt: skip
    return run_micro_batches(
        pm, batch, normalizer, arch=arch, micro=micro, z_weight=z_weight,
        precision=precision, device=device, train=train,
    )  # fmt: skip


def grad_norm_and_clip(pm: ParallelModel, max_norm: float) -> torch.Tensor:
    """Global gradient norm across shards and pipeline stages; clip when max_norm > 0.

    A tied embedding's copy on the last pipeline stage holds the same (summed) gradient
    as the first stage's, so it is counted once.
    """
    grads = [p.grad for p in counted_parameters(pm) if p.grad is not None]
    norm = total_norm(grads)
    group = pm.group("pp")
    if group is not None:
        squared = norm.pow(2)
        dist.all_reduce(squared, group=group)
        norm = squared.sqrt()
    if max_norm > 0:
        every = [p for p in pm.parameters() if p.grad is not None]
        torch.nn.utils.clip_grads_with_norm_(every, max_norm, norm.float())
    return norm


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm over gradients that may be DTensors with different placements.

    Accumulated in float64: fp32 norms of the same gradient computed whole and as two
    shards differed by 5e-5 relative here, more than any layout should change it.
    Each tensor's norm is made whole (`full_tensor`) before the norms are combined.
    """
    norms = [torch.linalg.vector_norm(g, 2.0, dtype=torch.float64) for g in grads]
    whole = [n.full_tensor() if hasattr(n, "full_tensor") else n for n in norms]
    if not whole:
        return torch.zeros((), dtype=torch.float64)
    return torch.linalg.vector_norm(torch.stack(whole), 2.0)


def counted_parameters(pm: ParallelModel):
    duplicate = None
    if pm.dims.pp > 1 and not pm.has_first_stage:
        for part in pm.parts:
            if part.cfg.tie_embeddings and part.embed is not None:
                duplicate = part.embed.weight
    return [p for p in pm.parameters() if p is not duplicate]


def reduce_sums(pm: ParallelModel, sums: LossSums) -> tuple[float, float]:
    """Job-wide ce and z sums: over data-parallel ranks, and from the last stage."""
    packed = torch.stack([sums.ce.float(), sums.z.float()])
    all_reduce_sum(packed, pm.group("dp"))
    all_reduce_sum(packed, pm.group("pp"))
    return float(packed[0]), float(packed[1])


def train_step(
    pm: ParallelModel,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    *,
    arch: str,
    micro_batch_size: int,
    z_loss: float,
    grad_clip: float,
    precision: str,
    device: torch.device,
) -> StepResult:
    tokens = count_tokens(batch)
    local = local_batch(pm, batch, device)
    normalizer = all_reduce_sum(local["loss_mask"].sum().float(), pm.group("dp")).clamp(min=1)
    sums = forward_backward(
        pm, local, normalizer, arch=arch, micro=micro_batch_size, z_weight=z_loss,
        precision=precision, device=device, train=True,
    )  # fmt: skip
    reduce_tied_gradients(pm.parts, pm.tied_group)
    norm = grad_norm_and_clip(pm, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ce, z = reduce_sums(pm, sums)
    n = float(normalizer)
    return StepResult(ce / n, z / n, float(norm), tokens, int(n))


@torch.no_grad()
def evaluate(pm: ParallelModel, batches, arch: str, precision: str, device) -> dict[str, float]:
    """Mean loss per loss token over the given validation batches."""
    for part in pm.parts:
        part.eval()
    ce = tokens = 0.0
    for batch in batches:
        local = local_batch(pm, batch, device)
        normalizer = all_reduce_sum(local["loss_mask"].sum().float(), pm.group("dp"))
        micro = next(iter(local.values())).shape[0]
        sums = forward_backward(
            pm, local, normalizer.clamp(min=1), arch=arch, micro=micro, z_weight=0.0,
            precision=precision, device=device, train=False,
        )  # fmt: skip
        ce += reduce_sums(pm, sums)[0]
        tokens += float(normalizer)
    for part in pm.parts:
        part.train()
    return {"val_loss": ce / max(tokens, 1.0), "val_tokens": int(tokens)}
