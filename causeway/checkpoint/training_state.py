"""What a resumable checkpoint holds, keyed so that any layout can load it.

model: parameters by single-device name; optimizer: per parameter name, its state
tensors (DTensors under FSDP/TP, which torch.distributed.checkpoint reshards on load);
data: the stream's position; guard: the step guard's skipped count and recent losses
(train/guard.py); rng; step. The schedule is a function of the step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import _init_optim_state, get_model_state_dict

from causeway.models.init import single_device_name


def model_state(parts: list[nn.Module]) -> dict:
    """The union of the parts' state dicts, keyed by single-device names."""
    state = {}
    for part in parts:
        state.update(get_model_state_dict(part))
    return state


def parameter_names(parts: list[nn.Module]) -> dict[int, str]:
    return {id(p): single_device_name(n) for part in parts for n, p in part.named_parameters()}


def optimizer_state(parts: list[nn.Module], optimizer: torch.optim.Optimizer) -> dict:
    """{parameter name: {state key: tensor}}, creating the state first if needed."""
    _init_optim_state(optimizer)
    names = parameter_names(parts)
    return {
        names[id(p)]: {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        for p, state in optimizer.state.items()
    }


def training_state(
    parts, optimizer, step: int, data_state: dict | None, guard_state: dict | None = None
) -> dict:
    state = {
        "model": model_state(parts),
        "optimizer": optimizer_state(parts, optimizer),
        "rng": torch.get_rng_state(),
        "step": torch.tensor(step),
    }
    if data_state is not None:
        state["data"] = data_state
    if guard_state is not None:
        state["guard"] = guard_state
    return state


def fit_guard_state(table: dict, state: dict) -> None:
    """Shape `state["guard"]` for loading `checkpoint`: its loss window may be shorter than
    this run's (a younger run, another train.spike_window), and a checkpoint written before
    the guard was saved has none (the guard then starts afresh). `table`: `tensor_table`."""
    if "guard" not in state:
        return
    if "guard.recent" not in table:
        del state["guard"]
        return
    shape, dtype = table["guard.recent"]
    state["guard"]["recent"] = torch.zeros(shape, dtype=dtype)


def tensor_table(checkpoint) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every tensor stored in a DCP checkpoint: name -> (shape, dtype), from its metadata."""
    metadata = FileSystemReader(str(checkpoint)).read_metadata()
    return {
        key: (tuple(item.size), item.properties.dtype)
        for key, item in metadata.state_dict_metadata.items()
        if isinstance(item, TensorStorageMetadata)
    }


def check_compatible(
    checkpoint, model: dict, whole_model: bool = True, table: dict | None = None
) -> None:
    """One clear error naming the tensors that differ between checkpoint and model.

    `model` is this rank's model state (global shapes); a pipeline stage holds only part
    of the model, so keys it lacks are not 'unexpected' there (`whole_model=False`).
    """
    table = tensor_table(checkpoint) if table is None else table
    stored = {k[len("model.") :]: v[0] for k, v in table.items() if k.startswith("model.")}
    wanted = {k: tuple(v.shape) for k, v in model.items()}
    missing = sorted(set(wanted) - set(stored))
    unexpected = sorted(set(stored) - set(wanted)) if whole_model else []
    shapes = sorted(k for k in set(wanted) & set(stored) if wanted[k] != stored[k])
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        more = " ..." if len(unexpected) > 5 else ""
        problems.append(f"not in this model {', '.join(unexpected[:5])}{more}")
    for key in shapes[:5]:
        problems.append(f"{key} is {stored[key]} in the checkpoint, {wanted[key]} here")
    if problems:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit this model (another architecture or "
            f"vocabulary?): {'; '.join(problems)}"
        )
