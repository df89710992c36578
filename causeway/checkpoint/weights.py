"""A committed checkpoint's model weights, loaded into any layout.

The weights are keyed by single-device parameter names (`training_state.model_state`),
so a whole model, its FSDP/TP shards or a pipeline stage each take the tensors they hold.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from causeway.checkpoint.commit import require_committed
from causeway.checkpoint.integrity import check_intact
from causeway.checkpoint.ranks import quiet_single_process
from causeway.checkpoint.training_state import check_compatible, model_state


def load_model_weights(
    checkpoint: Path,
    parts: list[nn.Module] | nn.Module,
    whole_model: bool = True,
    allow_partial: bool = False,
    verify: bool = False,
) -> None:
    """Load a committed checkpoint's weights into the parts (any layout); `whole_model`
    False for pipeline stages, which hold only some of the checkpoint's tensors. Its
    files' sizes are checked against the commit record, and with `verify` their checksums
    (`integrity.check_intact`, a collective then: call it on every rank)."""
    checkpoint = Path(checkpoint)
    if not allow_partial:
        require_committed(checkpoint)
    check_intact(checkpoint, verify)
    parts = [parts] if isinstance(parts, nn.Module) else parts
    state = {"model": model_state(parts)}
    check_compatible(checkpoint, state["model"], whole_model)
    with quiet_single_process():
        dcp.load(state, checkpoint_id=str(checkpoint))
    for part in parts:
        set_model_state_dict(part, state["model"], options=StateDictOptions(strict=False))
