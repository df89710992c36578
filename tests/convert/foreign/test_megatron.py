"""`causeway convert import-megatron` on checkpoints megatron-core wrote (tensor parallel 2 x
pipeline parallel 2, legacy and torch_dist layouts): logits equal to megatron-core's, what
causeway cannot represent refused by name, pickles read only when trusted."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from causeway.cli import main
from causeway.config import load_config
from causeway.convert.checkpoints import load_checkpoint_model
from causeway.convert.foreign.megatron_files import megatron_allowed
from causeway.convert.foreign.pickles import load_pickle
from causeway.train.trainer import Trainer
from tests.convert.foreign.write_megatron import VOCAB


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse
        return exit.code


def imported(source, out, *flags) -> object:
    argv = ["convert", "import-megatron", str(source), "--out", str(out), *flags]
    assert run([*argv, "--trust-pickle"]) == 0
    return out / "checkpoints" / "step_0"


def logits(checkpoint, tokens) -> torch.Tensor:
    with torch.no_grad():
        return load_checkpoint_model(checkpoint).eval()(tokens)


@pytest.mark.parametrize("layout", ["legacy", "torch_dist"])
def test_imported_logits_equal_megatron_core(megatron_dir, layout, tmp_path):
    checkpoint = imported(megatron_dir / layout, tmp_path / "run")
    reference = torch.load(megatron_dir / "logits.pt", weights_only=True)
    ours = logits(checkpoint, reference["tokens"])
    # The vocabulary padding (4352 rows for 4100 tokens) is dropped.
    assert ours.shape[-1] == VOCAB and reference["logits"].shape[-1] > VOCAB
    torch.testing.assert_close(ours, reference["logits"][..., :VOCAB], rtol=0, atol=1e-5)
    cfg = load_config(str(checkpoint / "config.yaml"))
    assert (cfg.model.n_layers, cfg.model.kv_heads, cfg.model.tie_embeddings) == (4, 2, False)
    provenance = json.loads((checkpoint / "meta.json").read_text())["provenance"]
    assert f"({layout}, tp 2, pp 2)" in provenance[-1]["conversion"]


def test_both_layouts_import_the_same_weights(megatron_dir, tmp_path):
    legacy = load_checkpoint_model(imported(megatron_dir / "legacy", tmp_path / "a"))
    dist = load_checkpoint_model(imported(megatron_dir / "torch_dist", tmp_path / "b"))
    a, b = legacy.state_dict(), dist.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_iteration_flag_and_a_missing_iteration(megatron_dir, tmp_path, capsys):
    assert imported(megatron_dir / "legacy", tmp_path / "a", "--iteration", "20").is_dir()
    argv = ["convert", "import-megatron", str(megatron_dir / "legacy"), "--out",
            str(tmp_path / "b"), "--iteration", "7", "--trust-pickle"]  # fmt: skip
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "iter_0000007 is not a saved iteration (saved: iter_0000020)" in err
    assert not (tmp_path / "b").exists()


def test_layernorm_with_biases_is_refused_by_name(megatron_dir, tmp_path, capsys):
    argv = ["convert", "import-megatron", str(megatron_dir / "layernorm"), "--out",
            str(tmp_path / "run"), "--trust-pickle"]  # fmt: skip
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "normalization LayerNorm (causeway has RMSNorm only)" in err
    assert "add_bias_linear (linear biases" in err and "non-gated GELU MLP" in err
    assert not (tmp_path / "run").exists()


def test_pickles_are_refused_unless_trusted(megatron_dir, tmp_path, capsys):
    argv = ["convert", "import-megatron", str(megatron_dir / "legacy"), "--out",
            str(tmp_path / "run")]  # fmt: skip
    assert run(argv) == 2
    assert "pass --trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


class Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_class_outside_the_allow_list_is_refused_by_name(megatron_dir, tmp_path, capsys):
    source = tmp_path / "evil"
    shutil.copytree(megatron_dir / "legacy", source)
    marker = tmp_path / "ran"
    for path in source.rglob("model_optim_rng.pt"):
        # Only the tensors are kept: the rest read back as stand-ins, which are refused too.
        state = load_pickle(path, megatron_allowed())
        tensors = {k: v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}
        torch.save({"model": tensors, "opt_param_scheduler": Payload(marker)}, path)
    argv = ["convert", "import-megatron", str(source), "--out", str(tmp_path / "run"),
            "--trust-pickle"]  # fmt: skip
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert f"refused to unpickle the class {os.system.__module__}.system" in err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_adapt_an_imported_causal_gpt_into_a_prefix_decoder(megatron_dir, tmp_path):
    """Import with a recipe's other sections, convert to a prefix LM, train 5 steps from it;
    export to Hugging Face works on the same checkpoint."""
    checkpoint = imported(megatron_dir / "legacy", tmp_path / "gpt", "--recipe", "tiny-cd-flm")
    prefix = tmp_path / "prefix"
    argv = ["convert", "arch", str(checkpoint), "--visibility", "prefix", "--objective",
            "prefix_lm", "--out", str(prefix)]  # fmt: skip
    assert run(argv) == 0
    recipe = str(prefix / "checkpoints" / "step_0" / "config.yaml")  # a whole recipe
    cfg = load_config(recipe, ["train.steps=5", "train.log_every=1",
                               f"checkpoint.init_from={prefix}"])  # fmt: skip
    assert (cfg.model.visibility, cfg.objective.name) == ("prefix", "prefix_lm")
    trainer = Trainer(cfg, tmp_path / "adapt")
    trainer.setup()
    start = trainer.pm.parts[0].state_dict()
    want = load_checkpoint_model(checkpoint).state_dict()
    assert all(torch.equal(start[k], want[k]) for k in want)  # from the imported weights
    records = trainer.fit()
    assert len(records) == 5 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert run(["convert", "export-hf", str(checkpoint), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
