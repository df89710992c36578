"""Initial weights that depend on the seed and each parameter's name, not on the layout.

Every parameter is drawn as its whole single-device tensor from a generator of its own,
seeded from (seed, single-device name); a rank then keeps the piece its layout gives it
(a tensor-parallel or FSDP shard, a pipeline stage's layers). So one `train.seed` gives
bit-identical weights under one process, tp, pp, FSDP and any mix, the last stage's copy
of tied embeddings equals the first stage's, and at most one whole parameter exists on a
rank at a time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

# Wrappers that activation checkpointing and torch.compile put into parameter names.
WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")
OUTPUT_PROJECTIONS = ("wo.weight", "w2.weight")  # scaled down with depth (GPT-2, OLMo)


@dataclass(frozen=True)
class Init:
    """How one parameter starts: normal, normal truncated at 3 std, or ones."""

    kind: str
    std: float = 0.0


def single_device_name(name: str) -> str:
    """The name a parameter has in the plain model, seen through the wrappers."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def parameter_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def depth_scaled_std(std: float, n_layers: int) -> float:
    return std / math.sqrt(2 * n_layers)


def transformer_init(name: str, std: float, depth: int) -> Init:
    """The rule of causeway's models: norms at one, embeddings and the output matrix
    normal(std), projections truncated normal(std), output projections of attention and
    MLP scaled down by sqrt(2 x depth) of their stack."""
    if name.endswith("norm.weight"):
        return Init("ones")
    if name.startswith(("embed.", "output.")):
        return Init("normal", std)
    if name.endswith(OUTPUT_PROJECTIONS):
        return Init("trunc_normal", depth_scaled_std(std, depth))
    return Init("trunc_normal", std)


def fill(tensor: torch.Tensor, init: Init, generator: torch.Generator) -> None:
    if init.kind == "ones":
        tensor.fill_(1.0)
    elif init.kind == "normal":
        nn.init.normal_(tensor, std=init.std, generator=generator)
    else:
        s = init.std
        nn.init.trunc_normal_(tensor, std=s, a=-3 * s, b=3 * s, generator=generator)


@torch.no_grad()
def init_parameters(module: nn.Module, seed: int, rule) -> None:
    """Initialise every parameter of `module` (materialised, possibly sharded) by
    `rule(single-device name) -> Init`."""
    for raw_name, param in module.named_parameters():
        name = single_device_name(raw_name)
        local = param.to_local() if isinstance(param, DTensor) else param
        whole = torch.empty(param.shape, dtype=torch.float32, device=local.device)
        generator = torch.Generator(device=whole.device).manual_seed(parameter_seed(seed, name))
        fill(whole, rule(name), generator)
        if isinstance(param, DTensor):
            # Every rank drew the same whole tensor: each keeps its piece, no communication.
            whole = distribute_tensor(
                whole, param.device_mesh, param.placements, src_data_rank=None
            ).to_local()
        local.copy_(whole)
