import pytest

from causeway.config import ConfigError, load_config

DECODER_OK = {
    ("full_lm", "causal"),
    ("prefix_lm", "causal"),
    ("prefix_lm", "prefix"),
    ("span_corruption", "causal"),
    ("span_corruption", "prefix"),
    ("mtf", "causal"),
    ("mtf", "prefix"),
    ("masked_lm", "bidirectional"),
}
OBJECTIVES = ["full_lm", "prefix_lm", "span_corruption", "masked_lm", "mtf"]
VISIBILITIES = ["causal", "prefix", "bidirectional"]


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("visibility", VISIBILITIES)
def test_decoder_visibility_objective_table(objective, visibility):
    sets = [f"objective.name={objective}", f"model.visibility={visibility}"]
    if objective == "mtf":
        sets += ["data.source=path", "data.path=/nonexistent"]
    if (objective, visibility) in DECODER_OK:
        cfg = load_config("tiny-cd-flm", sets)
        assert (cfg.objective.name, cfg.model.visibility) == (objective, visibility)
    else:
        with pytest.raises(ConfigError, match="refused: ") as err:
            load_config("tiny-cd-flm", sets)
        assert objective in str(err.value) and visibility in str(err.value)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_encoder_decoder_objectives(objective):
    sets = [f"objective.name={objective}"]
    if objective == "mtf":
        sets += ["data.source=path", "data.path=/nonexistent"]
    if objective in ("prefix_lm", "span_corruption", "mtf"):
        assert load_config("tiny-ed-plm", sets).objective.name == objective
    else:
        with pytest.raises(ConfigError, match="not valid for arch encoder_decoder"):
            load_config("tiny-ed-plm", sets)


@pytest.mark.parametrize("visibility", ["causal", "bidirectional"])
def test_encoder_decoder_refuses_other_visibilities(visibility):
    with pytest.raises(ConfigError, match="encoder is bidirectional and its decoder causal"):
        load_config("tiny-ed-plm", [f"model.visibility={visibility}"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.d_model=130"], "not divisible by model.n_heads"),
        (["model.n_kv_heads=3"], "multiple of model.n_kv_heads"),
        (["model.head_dim=15"], "must be even for RoPE"),
        (["data.seq_len=4096"], "exceeds model.max_seq_len"),
        (["data.micro_batch_size=3"], "positive multiple of data.micro_batch_size"),
        (["data.source=path"], "needs data.path"),
        (["train.steps=0"], "train.steps must be positive"),
        (["model.dropout=1.5"], "model.dropout must be in"),
        (["optimizer.betas=[0.9]"], "needs two values"),
        (["objective.name=mtf"], "mtf needs"),
        (["checkpoint.every=-1"], "checkpoint.every and checkpoint.keep must be >= 0"),
        (["train.stop_signals=[SIGUSR3]"], "'SIGUSR3' is not a catchable signal name"),
        (["train.stop_signals=[SIGKILL]"], "'SIGKILL' is not a catchable signal name"),
    ],
)
def test_meaningless_values_are_refused(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny-cd-plm", sets)
