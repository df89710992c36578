from pathlib import Path

import pytest

from causeway.config import ConfigError, RunConfig, dump_yaml, find_recipe, load_config
from causeway.config.loading import CONFIG_DIR
from causeway.parallel.dims import ParallelDims

RECIPES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def test_every_recipe_loads_and_round_trips(tmp_path):
    assert len(RECIPES) >= 15
    for name in RECIPES:
        cfg = load_config(name)
        saved = tmp_path / f"{name}.yaml"
        saved.write_text(dump_yaml(cfg))
        assert load_config(str(saved)) == cfg, name


def test_overrides_parse_values_with_yaml():
    cfg = load_config(
        "tiny-cd-flm",
        ["train.steps=7", "optimizer.betas=[0.8, 0.9]", "model.tie_embeddings=false", "name=x"],
    )
    assert cfg.train.steps == 7
    assert cfg.optimizer.betas == [0.8, 0.9]
    assert cfg.model.tie_embeddings is False
    assert cfg.name == "x"


def test_int_widens_to_float_but_not_the_reverse():
    assert load_config("tiny-cd-flm", ["optimizer.lr=1"]).optimizer.lr == 1.0
    with pytest.raises(ConfigError, match=r"model.n_layers expects int, got 2.5"):
        load_config("tiny-cd-flm", ["model.n_layers=2.5"])


def test_unknown_key_names_path_source_and_closest_key():
    with pytest.raises(ConfigError) as err:
        load_config("tiny-cd-flm", ["model.d_modle=3"])
    message = str(err.value)
    assert "'model.d_modle'" in message
    assert "did you mean 'model.d_model'" in message
    assert "--set model.d_modle=3" in message
    assert "\n" not in message


def test_unknown_key_in_a_recipe_file_names_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model:\n  n_layer: 2\n")
    with pytest.raises(ConfigError, match=r"'model.n_layer' \(in .*bad.yaml\); did you mean"):
        load_config(str(recipe))


def test_unknown_section_suggests_section():
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        load_config("tiny-cd-flm", ["optimiser.lr=1"])


def test_wrong_type_names_expected_type_and_value():
    with pytest.raises(ConfigError, match=r"train.steps expects int, got 'many' \(str\)"):
        load_config("tiny-cd-flm", ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"model.mlp: 'relu' is not one of swiglu, geglu"):
        load_config("tiny-cd-flm", ["model.mlp=relu"])
    with pytest.raises(ConfigError, match=r"optimizer.betas\[1\] expects float"):
        load_config("tiny-cd-flm", ["optimizer.betas=[0.9, no]"])


def test_bad_override_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config("tiny-cd-flm", ["train.steps"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(broken))


def test_recipe_lookup_by_name_and_suggestion():
    assert find_recipe("quickstart") == CONFIG_DIR / "quickstart.yaml"
    with pytest.raises(ConfigError, match="did you mean 'tiny-nd-mlm'"):
        find_recipe("tiny-nd-mln")


def test_defaults_resolve_visibility_and_micro_batch():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.model.visibility == "causal"
    assert cfg.data.micro_batch_size is None  # each data-parallel rank's share
    ParallelDims.from_config(cfg, 1)
    assert cfg.data.micro_batch_size == cfg.data.batch_size
    two = load_config(None, ["parallel.dp_shard=2"])
    ParallelDims.from_config(two, 2)
    assert two.data.micro_batch_size == two.data.batch_size // 2
    ed = load_config(None, ["model.arch=encoder_decoder", "objective.name=prefix_lm"])
    assert ed.model.visibility == "prefix"
    assert ed.data.targets_length == ed.data.inputs_length == ed.data.seq_len


def test_encoder_decoder_span_corruption_derives_targets_length():
    cfg = load_config("tiny-ed-mlm", ["data.inputs_length=512", "model.max_seq_len=512"])
    assert (cfg.data.inputs_length, cfg.data.targets_length) == (512, 114)


def test_yaml_files_are_read_safely(tmp_path):
    recipe = tmp_path / "evil.yaml"
    recipe.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(recipe))
    assert Path(recipe).exists()
