import math

import pytest
import torch

from causeway.config.schema import OptimizerConfig, ScheduleConfig
from causeway.train.optim import build_optimizer, lr_multiplier, parameter_groups


def test_warmup_is_linear_then_cosine_reaches_the_floor():
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_multiplier(cfg, 100, s) for s in range(3)] == [0.1, 0.2, 0.3]
    assert lr_multiplier(cfg, 100, 9) == 1.0
    assert lr_multiplier(cfg, 100, 10) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 100, 55) == pytest.approx(0.55)
    assert lr_multiplier(cfg, 100, 100) == pytest.approx(0.1)


def test_linear_and_constant_and_inverse_sqrt():
    linear = ScheduleConfig(name="linear", warmup_steps=0, min_lr_ratio=0.0)
    assert lr_multiplier(linear, 10, 5) == pytest.approx(0.5)
    constant = ScheduleConfig(name="constant", warmup_steps=2)
    assert lr_multiplier(constant, 10, 7) == 1.0
    rsqrt = ScheduleConfig(name="inverse_sqrt", warmup_steps=100)
    assert lr_multiplier(rsqrt, 1000, 99) == 1.0
    assert lr_multiplier(rsqrt, 1000, 399) == pytest.approx(math.sqrt(100 / 400))


def test_norm_gains_are_not_decayed():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=True), torch.nn.LayerNorm(4))
    decay, no_decay = parameter_groups(model, 0.1)
    assert [p.ndim for p in decay["params"]] == [2]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_optimizers_step(name):
    model = torch.nn.Linear(4, 4)
    opt = build_optimizer(OptimizerConfig(name=name, lr=0.1), model)
    before = model.weight.detach().clone()
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)
    assert type(opt).__name__ == {"adamw": "AdamW", "adafactor": "Adafactor"}[name]
