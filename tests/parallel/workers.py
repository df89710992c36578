"""Functions that run inside the harness's processes (importable by spawned children)."""

from __future__ import annotations

import torch

from causeway.config import load_config
from causeway.train.trainer import run_training


def train_records(recipe: str, overrides: list[str], run_dir: str) -> list[dict]:
    """Train and return the per-step records (loss, grad_norm, ...)."""
    return run_training(load_config(recipe, overrides), run_dir)


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def local_state_bytes(recipe: str, overrides: list[str]) -> dict[str, int]:
    """Bytes of parameters and optimizer state this rank holds after one step."""
    from causeway.train.data import build_data
    from causeway.train.distributed import init_distributed
    from causeway.train.optim import build_optimizer
    from causeway.train.step import train_step
    from causeway.train.trainer import build_parallel_model

    cfg = load_config(recipe, overrides)
    env = init_distributed("cpu")
    pm = build_parallel_model(cfg, env)
    optimizer = build_optimizer(cfg.optimizer, list(pm.parameters()))
    train_step(
        pm, optimizer, next(build_data(cfg).train), arch=cfg.model.arch,
        micro_batch_size=cfg.data.micro_batch_size, z_loss=0.0, grad_clip=1.0,
        precision="fp32", device=env.device,
    )  # fmt: skip
    state = [
        v for s in optimizer.state.values() for v in s.values()
        if isinstance(v, torch.Tensor) and v.ndim > 0
    ]  # fmt: skip
    return {"parameters": local_bytes(pm.parameters()), "optimizer": local_bytes(state)}
