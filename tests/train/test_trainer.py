import json

import pytest
import torch
import yaml

from causeway.checkpoint.commit import is_committed
from causeway.checkpoint.weights import load_model_weights
from causeway.config import dump_yaml, load_config
from causeway.models import build_model, materialize, model_inputs
from causeway.parallel.apply import ParallelModel
from causeway.parallel.dims import ParallelDims
from causeway.train.data import build_data
from causeway.train.step import StepSettings, train_step
from causeway.train.trainer import Trainer, run_training


def small(recipe="tiny-nd-mlm", *sets):
    return load_config(recipe, ["train.steps=6", "train.log_every=2", *sets])


def test_run_directory_holds_config_metrics_tensorboard_and_checkpoint(builtin_dir, tmp_path):
    cfg = small("tiny-nd-mlm", "train.eval_every=3", "train.peak_tflops=1.0")
    run = tmp_path / "run"
    run_training(cfg, run)
    assert yaml.safe_load((run / "config.yaml").read_text()) == yaml.safe_load(dump_yaml(cfg))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    for record in records:
        if record["step"] % 2 == 0:
            assert {"loss", "lr", "tokens_per_s", "grad_norm", "mfu"} <= record.keys()
            assert record["tokens_per_s"] > 0 and 0 < record["mfu"] < 1
    assert {"val_loss", "val_tokens"} <= records[1].keys()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = run / "checkpoints" / "step_6"
    assert is_committed(checkpoint)
    assert json.loads((checkpoint / "meta.json").read_text())["step"] == 6


def test_final_checkpoint_reproduces_the_model(builtin_dir, tmp_path):
    cfg = small("tiny-cd-flm")
    run = tmp_path / "run"
    trainer = Trainer(cfg, run)
    trainer.setup()
    trainer.fit()
    trained = {k: v.clone() for k, v in trainer.pm.parts[0].state_dict().items()}
    model = materialize(build_model(cfg.model), "cpu", seed=123)
    assert not all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    load_model_weights(run / "checkpoints" / "step_6", model)
    loaded = model.state_dict()
    assert loaded.keys() == trained.keys()
    for key, value in trained.items():  # bit for bit, every tensor
        assert torch.equal(loaded[key], value), key
    (run / "checkpoints" / "step_6" / "COMMITTED").unlink()
    with pytest.raises(RuntimeError, match="partial"):
        load_model_weights(run / "checkpoints" / "step_6", model)


def one_step(cfg, micro):
    data = build_data(cfg)
    batch = next(data.train)
    torch.manual_seed(0)
    model = materialize(build_model(cfg.model), "cpu", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    pm = ParallelModel([model], ParallelDims(1, 1, 1, 1, 1))
    settings = StepSettings(cfg.model.arch, micro, 1e-4, 0.0, "fp32", torch.device("cpu"))
    return train_step(pm, opt, batch, settings).materialize()


@pytest.mark.parametrize("recipe", ["tiny-nd-mlm", "tiny-ed-mlm"])
def test_gradient_accumulation_equals_one_big_batch(builtin_dir, recipe):
    cfg = small(recipe)
    whole, split = one_step(cfg, 8), one_step(cfg, 2)
    assert whole.loss == pytest.approx(split.loss, rel=1e-5)
    assert whole.grad_norm == pytest.approx(split.grad_norm, rel=1e-5)
    assert whole.z_loss == pytest.approx(split.z_loss, rel=1e-5) and whole.z_loss > 0


def test_adafactor_and_bf16_autocast_train(builtin_dir, tmp_path):
    cfg = small("tiny-cd-flm", "optimizer.name=adafactor", "train.precision=bf16")
    records = run_training(cfg, tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert records[-1]["loss"] < records[0]["loss"]


def test_z_loss_is_logged_when_enabled(builtin_dir, tmp_path):
    records = run_training(small("tiny-cd-flm", "train.z_loss=1e-4"), tmp_path / "run")
    assert all(r["z_loss"] > 0 for r in records)


def test_batches_match_the_model_inputs(builtin_dir):
    cfg = small("tiny-ed-mlm")
    batch = next(build_data(cfg).train)
    inputs = model_inputs(batch, "encoder_decoder")
    assert inputs["enc_tokens"].shape == (8, cfg.data.inputs_length)
    assert inputs["dec_tokens"].shape == (8, cfg.data.targets_length)


def test_vocabulary_too_small_for_the_tokenizer_is_refused(builtin_dir, tmp_path):
    from causeway.config import ConfigError

    with pytest.raises(ConfigError, match="smaller than the tokenizer"):
        run_training(small("tiny-cd-flm", "model.vocab_size=1000"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_final_checkpoint_holds_the_data_position(builtin_dir, tmp_path):
    from causeway.checkpoint.commit import load_state

    cfg = small("tiny-cd-plm", "train.steps=3")
    run_training(cfg, tmp_path / "run")
    uninterrupted = build_data(cfg).train
    for _ in range(3):
        next(uninterrupted)
    resumed = build_data(cfg).train
    template = {"data": resumed.global_state_dict()}
    load_state(tmp_path / "run" / "checkpoints" / "step_3", template)
    resumed.load_state_dict(template["data"])
    expected, got = next(uninterrupted), next(resumed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
