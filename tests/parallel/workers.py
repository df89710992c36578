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
    from causeway.train.step import StepSettings, train_step
    from causeway.train.trainer import build_parallel_model

    cfg = load_config(recipe, overrides)
    env = init_distributed("cpu")
    pm = build_parallel_model(cfg, env)
    optimizer = build_optimizer(cfg.optimizer, list(pm.parameters()))
    settings = StepSettings(cfg.model.arch, cfg.data.micro_batch_size, 0.0, 1.0, "fp32", env.device)
    train_step(pm, optimizer, next(build_data(cfg).train), settings)
    state = [
        v for s in optimizer.state.values() for v in s.values()
        if isinstance(v, torch.Tensor) and v.ndim > 0
    ]  # fmt: skip
    return {"parameters": local_bytes(pm.parameters()), "optimizer": local_bytes(state)}


def synthetic_batch(cfg, rows: int, seed: int) -> dict[str, torch.Tensor]:
    """Random tokens, every position a loss token."""
    g = torch.Generator().manual_seed(seed)
    shape = (rows, cfg.data.seq_len)
    tokens = torch.randint(0, cfg.model.vocab_size, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.bool)
    return {"tokens": tokens, "targets": tokens.roll(-1, 1), "loss_mask": mask}


def per_tensor_norm(grads, pp_group) -> torch.Tensor:
    """The gradient norm as computed before: each tensor's norm made whole
    (`full_tensor`, one all-reduce per DTensor), then summed over pipeline stages."""
    from torch.distributed.tensor import DTensor

    norms = [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]
    whole = [n.full_tensor() if isinstance(n, DTensor) else n for n in norms]
    squared = torch.stack(whole).square().sum()
    if pp_group is not None:
        torch.distributed.all_reduce(squared, group=pp_group)
    return squared.sqrt()


def grad_norm_collectives(recipe: str, overrides: list[str]) -> dict:
    """After one forward-backward, the gradient norm as the step computes it and as the
    per-tensor reference does, with the collectives each of them issued."""
    from torch.distributed.tensor.debug import CommDebugMode

    from causeway.parallel.pipeline import reduce_tied_gradients
    from causeway.train.distributed import init_distributed
    from causeway.train.step import (
        StepSettings,
        counted_parameters,
        forward_backward,
        grad_norm_and_clip,
    )
    from causeway.train.trainer import build_parallel_model

    cfg = load_config(recipe, overrides)
    env = init_distributed("cpu")
    pm = build_parallel_model(cfg, env)
    # This rank's share of the rows, its own on each data-parallel rank (tp and pp
    # peers see the same); the normaliser is the job's loss tokens.
    share = cfg.data.batch_size // pm.dims.dp
    batch = synthetic_batch(cfg, share, seed=pm.local_rank("dp"))
    normalizer = torch.tensor(float(cfg.data.batch_size * cfg.data.seq_len))
    forward_backward(pm, batch, normalizer, StepSettings.from_config(cfg, env.device), train=True)
    reduce_tied_gradients(pm.parts, pm.tied_group)
    grads = [p.grad for p in counted_parameters(pm) if p.grad is not None]
    with CommDebugMode() as before:
        reference = per_tensor_norm(grads, pm.group("pp"))
    with CommDebugMode() as after:
        norm = grad_norm_and_clip(pm, 0.0, env.device)
    return {
        "norm": norm.item(),
        "reference": reference.item(),
        "tensors": len(grads),
        "collectives": after.get_total_counts(),
        "reference_collectives": before.get_total_counts(),
    }


# c10d operator (both the in-place process-group ops and the functional ones) -> kind,
# and which argument's bytes count: the unsharded size for gathers and scatters.
COLLECTIVES = {
    "_allgather_base_": ("all_gather", 0), "allgather_": ("all_gather", 0),
    "all_gather_into_tensor": ("all_gather", "out"),
    "_reduce_scatter_base_": ("reduce_scatter", 1), "reduce_scatter_": ("reduce_scatter", 1),
    "reduce_scatter_tensor": ("reduce_scatter", 0),
    "allreduce_": ("all_reduce", 0), "all_reduce": ("all_reduce", 0),
    "send": ("send", 0), "recv_": ("recv", 0),
}  # fmt: skip


def tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def collective_log():
    """A dispatch mode that records every collective this rank issues: (kind, bytes)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls: list[tuple[str, int]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            namespace, _, name = func._schema.name.partition("::")
            if namespace in ("c10d", "_c10d_functional") and name in COLLECTIVES:
                kind, which = COLLECTIVES[name]
                self.calls.append((kind, tensor_bytes(out if which == "out" else args[which])))
            elif namespace in ("c10d", "_c10d_functional") and not name.startswith(
                ("wait", "_wrap")  # a wait, or funcol's autograd wrapper: not a collective
            ):
                self.calls.append((f"other:{name}", tensor_bytes(args[0]) if args else 0))
            return out

    return Log()


def step_collectives(recipe: str, overrides: list[str]) -> dict:
    """Every collective of this rank's second training step (the first also pays lazy
    initialisation), and the plan's prediction for the same run."""
    from causeway.plan.collectives import predicted_collectives
    from causeway.train.distributed import init_distributed
    from causeway.train.optim import build_optimizer
    from causeway.train.step import StepSettings, train_step
    from causeway.train.trainer import build_parallel_model

    cfg = load_config(recipe, overrides)
    env = init_distributed("cpu")
    pm = build_parallel_model(cfg, env)
    optimizer = build_optimizer(cfg.optimizer, list(pm.parameters()))
    settings = StepSettings.from_config(cfg, env.device)
    share = cfg.data.batch_size // pm.dims.dp
    for step in range(2):
        batch = synthetic_batch(cfg, share, seed=step * 100 + pm.local_rank("dp"))
        log = collective_log()
        with log:
            train_step(pm, optimizer, batch, settings)
    measured: dict[str, dict[str, int]] = {}
    for kind, nbytes in log.calls:
        entry = measured.setdefault(kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += nbytes
    return {"measured": measured, "predicted": predicted_collectives(cfg, pm.dims)}
