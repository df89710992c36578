"""The output head: one explicit, swappable piece that adds nothing to the state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from causeway.models.head import OutputHead
from causeway.models.loss import LossSums
from causeway.parallel.pipeline import StackedLossHead, stack_head_output

from .reference import tiny_model

ARCHS = ["decoder", "encoder_decoder"]


def run(model, tokens, **kwargs):
    if model.cfg.arch == "encoder_decoder":
        return model(tokens, tokens, **kwargs)
    return model(tokens, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_head_is_set_only_through_set_head_and_adds_no_state(arch):
    model = tiny_model(arch=arch)
    keys = list(model.state_dict())
    assert isinstance(model.head, OutputHead)
    with pytest.raises(AttributeError):
        model.head = OutputHead()
    with pytest.raises(TypeError, match="no parameters or buffers"):
        model.set_head(nn.Linear(2, 2))
    stack_head_output(model)
    assert repr(model.head) == "StackedLossHead(OutputHead())"
    assert list(model.state_dict()) == keys and not any("head" in k for k in keys)
    with pytest.raises(RuntimeError, match="stacked already"):
        stack_head_output(model)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_stacked_head_returns_the_loss_sums_as_one_tensor(arch):
    model = tiny_model(arch=arch)
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 8))
    batch = dict(targets=tokens, loss_mask=torch.ones_like(tokens, dtype=torch.bool))
    sums = run(model, tokens, **batch)
    assert isinstance(sums, LossSums)
    model.set_head(StackedLossHead(model.head))
    stacked = run(model, tokens, **batch)
    assert torch.equal(stacked, torch.stack([*sums[:3], sums.tokens.to(sums.loss.dtype)]))
