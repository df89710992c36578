"""Every tiny recipe trains 20 steps on the builtin corpus with a falling loss."""

import json

import pytest

from causeway.config import load_config
from causeway.train.trainer import run_training

TINY = ["cd-flm", "cd-plm", "cd-mlm", "nd-plm", "nd-mlm", "ed-plm", "ed-mlm", "bi-mlm"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_recipe_loss_falls(name, builtin_dir, tmp_path):
    cfg = load_config(f"tiny-{name}", ["train.steps=20", "train.log_every=1"])
    records = run_training(cfg, tmp_path / "run")
    losses = [r["loss"] for r in records]
    assert len(losses) == 20
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.5, f"{name}: loss {first:.3f} -> {last:.3f}"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 21))
