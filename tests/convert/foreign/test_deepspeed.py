"""`causeway convert import-deepspeed` on ZeRO-2 and ZeRO-3 checkpoints DeepSpeed wrote on
the CPU (2 gloo ranks): consolidated with zero_to_fp32, the imported model's logits equal
the DeepSpeed engine's."""

from __future__ import annotations

import pytest
import torch
import yaml

from causeway.convert.checkpoints import load_checkpoint_model
from tests.convert.foreign.test_megatron import run
from tests.convert.foreign.write_deepspeed import MODEL


@pytest.fixture
def recipe(tmp_path):
    """A recipe whose model section describes the trained module."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": MODEL, "data": {"seq_len": MODEL["max_seq_len"]}}))
    return path


@pytest.mark.parametrize("stage", [2, 3], ids=["zero2-causeway-names", "zero3-hf-llama-names"])
def test_imported_logits_equal_the_deepspeed_engine(deepspeed_dirs, stage, recipe, tmp_path):
    source = deepspeed_dirs[stage]
    argv = ["convert", "import-deepspeed", str(source / "ds"), "--out", str(tmp_path / "run"),
            "--recipe", str(recipe), "--trust-pickle"]  # fmt: skip
    assert run(argv) == 0
    reference = torch.load(source / "logits.pt", weights_only=True)
    model = load_checkpoint_model(tmp_path / "run" / "checkpoints" / "step_0").eval()
    with torch.no_grad():
        ours = model(reference["tokens"])
    torch.testing.assert_close(ours, reference["logits"], rtol=0, atol=1e-6)


def test_tag_flag_and_refusals(deepspeed_dirs, recipe, tmp_path, capsys):
    ds = deepspeed_dirs[2] / "ds"
    base = ["convert", "import-deepspeed", str(ds), "--out", str(tmp_path / "run")]
    assert run([*base, "--recipe", str(recipe)]) == 2  # not trusted
    assert "pass --trust-pickle" in capsys.readouterr().err
    assert run([*base, "--trust-pickle"]) == 2  # a plain module: its settings are unknown
    assert "pass --recipe" in capsys.readouterr().err
    assert run([*base, "--tag", "global_step9", "--recipe", str(recipe), "--trust-pickle"]) == 2
    assert "no tag 'global_step9' (saved: global_step3)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert run([*base, "--tag", "global_step3", "--recipe", str(recipe), "--trust-pickle"]) == 0
