"""Shared set-up for parity tests: one tiny, packed, fp32 configuration and its weights."""

from __future__ import annotations

import pytest

from causeway.checkpoint.commit import save_final
from causeway.config import load_config
from causeway.models import build_model, materialize

# Small enough for 4 CPU processes; divisible by tp 2 (heads, kv-heads, vocab, sequence)
# and by pp 2 x 2 virtual stages (layers). Adam's first update is lr * sign(g): with the
# default eps 1e-8, gradient entries at fp32 rounding level flip sign between layouts
# and move by 2 lr; eps 1e-6 keeps them still, so the comparison measures the parallel
# engine rather than Adam's amplification of rounding.
TINY = [
    "model.d_model=64", "model.n_layers=4", "model.n_heads=4", "model.n_kv_heads=2",
    "model.d_ff=128", "model.max_seq_len=64", "data.seq_len=64", "data.batch_size=8",
    "data.micro_batch_size=2", "train.steps=3", "train.log_every=1", "train.precision=fp32",
    "train.grad_clip=1.0", "schedule.warmup_steps=1", "optimizer.lr=1e-3", "optimizer.eps=1e-6",
]  # fmt: skip
ED_TINY = [*TINY, "data.inputs_length=64"]


def tiny_overrides(recipe: str) -> list[str]:
    return ED_TINY if "-ed-" in recipe else TINY


@pytest.fixture(scope="session")
def init_weights(tmp_path_factory, builtin_dir):
    """A committed step-0 checkpoint per recipe: every layout starts from these weights."""
    made: dict[str, str] = {}

    def weights(recipe: str) -> str:
        if recipe not in made:
            cfg = load_config(recipe, tiny_overrides(recipe))
            model = materialize(build_model(cfg.model), "cpu", seed=1234)
            out = tmp_path_factory.mktemp(f"init-{recipe}")
            made[recipe] = str(save_final(out, 0, cfg, [model]))
        return made[recipe]

    return weights
