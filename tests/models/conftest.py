"""Fixtures for the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """The models here are tiny: one intra-op thread is fastest, and it avoids the large
    slow-downs of oversubscribed thread pools when other processes share the CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def fixed_seed():
    torch.manual_seed(0)
