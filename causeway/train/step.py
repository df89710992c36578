"""One optimizer step over a global batch split into micro-batches."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from causeway.models import model_inputs
from causeway.models.loss import LossSums


@dataclass
class StepResult:
    loss: float  # mean cross-entropy per loss token (z-loss excluded)
    z_loss: float
    grad_norm: float
    tokens: int  # tokens processed (all positions of every row)
    loss_tokens: int


def autocast_for(precision: str, device: torch.device):
    """bf16 autocast where asked for, or under 'auto' on GPUs that support it."""
    if precision == "fp32":
        return nullcontext()
    if precision == "auto" and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def split_micro(batch: dict[str, torch.Tensor], micro: int) -> list[dict[str, torch.Tensor]]:
    rows = next(iter(batch.values())).shape[0]
    return [{k: v[i : i + micro] for k, v in batch.items()} for i in range(0, rows, micro)]


def forward_loss(model: nn.Module, batch: dict, arch: str, z_weight: float) -> LossSums:
    inputs = model_inputs(batch, arch)
    return model(
        **inputs, targets=batch["targets"], loss_mask=batch["loss_mask"], z_weight=z_weight
    )


def train_step(
    model: nn.Module,
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
    """Accumulate gradients over micro-batches, normalised by the global loss tokens."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    normalizer = batch["loss_mask"].sum().clamp(min=1)
    ce_sum = z_sum = 0.0
    for micro in split_micro(batch, micro_batch_size):
        with autocast_for(precision, device):
            sums = forward_loss(model, micro, arch, z_loss)
        sums.total(normalizer).backward()
        ce_sum += sums.ce.detach()
        z_sum += sums.z.detach()
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_tokens = int(normalizer)
    return StepResult(
        loss=float(ce_sum / normalizer),
        z_loss=float(z_sum / normalizer),
        grad_norm=float(grad_norm),
        tokens=sum(
            v.numel() for k, v in batch.items() if k in ("tokens", "enc_tokens", "dec_tokens")
        ),
        loss_tokens=loss_tokens,
    )


@torch.no_grad()
def evaluate(model: nn.Module, batches, arch: str, precision: str, device) -> dict[str, float]:
    """Mean loss per loss token over the given validation batches."""
    was_training = model.training
    model.eval()
    ce = tokens = 0.0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast_for(precision, device):
            sums = forward_loss(model, batch, arch, 0.0)
        ce += float(sums.ce)
        tokens += float(sums.tokens)
    model.train(was_training)
    return {"val_loss": ce / max(tokens, 1.0), "val_tokens": int(tokens)}
