"""Reading a DeepSpeed ZeRO checkpoint (stages 1, 2 and 3) with DeepSpeed's own tools.

DeepSpeed saves `DIR/TAG/` (`DIR/latest` names the newest tag): the module's state per
model-parallel rank (`mp_rank_00_model_states.pt`, or one file per data-parallel rank
under ZeRO-3) and each data-parallel rank's slice of the fp32 master weights in the
optimizer files. `zero_to_fp32` (DeepSpeed's consolidation utility, the `deepspeed`
extra) joins the slices into full fp32 tensors, exactly the engine's master weights; it
runs here with every `torch.load` restricted to weights_only (`pickles`).

Parameter names are the wrapped module's: causeway's own, Hugging Face Llama's, or
Megatron-DeepSpeed's GPT (`language_model.encoder.layers.N...`), which also saves its
args in the model-states file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from causeway.convert.foreign.pickles import Allowed, load_pickle, weights_only_loads


def deepspeed_allowed() -> Allowed:
    """The classes DeepSpeed pickles beside tensors: its loss scalers, the ZeRO stage
    enum, fragment addresses (and, from Megatron-DeepSpeed, the args)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from causeway.convert.foreign.megatron_files import megatron_allowed

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address,
            *megatron_allowed()]  # fmt: skip


def require_deepspeed() -> None:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise ValueError(
            "import-deepspeed consolidates ZeRO shards with DeepSpeed's zero_to_fp32: "
            "install the deepspeed extra (pip install 'causeway[deepspeed]')"
        ) from None


def checkpoint_tag(directory: Path, tag: str | None) -> str:
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory (a DeepSpeed checkpoint directory)")
    tags = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if tag is None:
        latest = directory / "latest"
        if not latest.is_file():
            raise ValueError(f"{directory}: no `latest` file; pass --tag (saved: "
                             f"{', '.join(tags) or 'none'})")  # fmt: skip
        tag = latest.read_text().strip()
    if tag not in tags:
        raise ValueError(f"{directory}: no tag {tag!r} (saved: {', '.join(tags) or 'none'})")
    return tag


def read_deepspeed(directory: Path, tag: str | None) -> tuple[dict[str, torch.Tensor], Any]:
    """(full fp32 weights by the module's names, the saved Megatron args or None)."""
    require_deepspeed()
    from deepspeed.utils import zero_to_fp32

    tag = checkpoint_tag(directory, tag)
    allowed = deepspeed_allowed()
    with weights_only_loads(allowed):
        state = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=tag)
    model_files = sorted((Path(directory) / tag).glob("*model_states.pt"))
    # Only the args: the module's tensors, which zero_to_fp32 has read, stay on disk.
    args = load_pickle(model_files[0], allowed, mmap=True).get("args") if model_files else None
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, args
