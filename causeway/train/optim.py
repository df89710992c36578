"""Optimizers (torch.optim's AdamW and Adafactor) and learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from causeway.config.schema import OptimizerConfig, ScheduleConfig


def parameter_groups(params, weight_decay: float) -> list[dict]:
    """Decay matrices; leave norms' gains (1-D) undecayed, as is usual for LMs."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    """`params`: a module or an iterable of parameters (all parts a rank holds)."""
    groups = parameter_groups(params, cfg.weight_decay)
    distributed = any(hasattr(p, "to_local") for g in groups for p in g["params"])
    if cfg.name == "adafactor":
        # torch's Adafactor: beta2 follows 1 - step^decay_rate (the paper's decay 0.8).
        return torch.optim.Adafactor(groups, lr=cfg.lr, beta2_decay=cfg.decay_rate)
    # The fused kernel serves plain CPU and CUDA tensors; DTensors take the foreach path.
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=not distributed
    )


def lr_multiplier(cfg: ScheduleConfig, total_steps: int, step: int) -> float:
    """Factor applied to the peak learning rate at `step` (0-based): warmup, then decay."""
    warmup = cfg.warmup_steps
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / (step + 1))
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = cfg.min_lr_ratio
    if cfg.name == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(cfg, total_steps, step)
    )
