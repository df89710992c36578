"""Hugging Face Llama export/import against transformers' own LlamaForCausalLM (no downloads)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from causeway.checkpoint.commit import save_final
from causeway.checkpoint.weights import load_model_weights
from causeway.config import ConfigError, ModelConfig, RunConfig
from causeway.config.checks import check_config
from causeway.convert.checkpoints import checkpoint_config
from causeway.convert.hf import export_hf, hf_attention_mask, import_hf
from causeway.models import build_model, materialize

transformers = pytest.importorskip("transformers")

SEQ = 12


@pytest.fixture(autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_checkpoint(tmp_path, seed=0, objective="full_lm", data_path=None, **model):
    """A committed step-3 checkpoint of a tiny random decoder (norm weights random too, so a
    swapped norm mapping cannot pass)."""
    cfg = RunConfig()
    fields = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96)
    cfg.model = ModelConfig(
        **{**fields, "max_seq_len": 64, "attention": "sdpa", "rope_theta": 500.0, **model}
    )
    cfg.objective.name = objective
    cfg.data.seq_len = 32
    if data_path is None:  # hermetic: never the session's builtin corpus
        (data_path := tmp_path / "no-data").mkdir(exist_ok=True)
    cfg.data.source, cfg.data.path = "path", str(data_path)
    cfg = check_config(cfg)
    torch.manual_seed(seed)
    net = materialize(build_model(cfg.model), "cpu", seed=seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.5 * torch.randn_like(p))
    return save_final(tmp_path / "run", 3, cfg, [net]), net.eval()


def hf_model(out, attn="sdpa"):
    model = transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation=attn)
    return model.eval()


def tokens(batch=2):
    return torch.randint(0, 256, (batch, SEQ), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_causal_export_loads_in_transformers_with_equal_logits(tmp_path, attn):
    ckpt, net = make_checkpoint(tmp_path)
    out = export_hf(ckpt, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["num_key_value_heads"] == 2
    hf = hf_model(out, attn)
    assert hf.config.rms_norm_eps == net.cfg.norm_eps
    x = tokens()
    with torch.no_grad():
        ours, theirs = net(x), hf(input_ids=x).logits
    assert ours.abs().max() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_prefix_decoder_with_a_4d_mask_matches_causeway(tmp_path, attn):
    ckpt, net = make_checkpoint(tmp_path, objective="prefix_lm", visibility="prefix")
    hf = hf_model(export_hf(ckpt, tmp_path / "hf"), attn)
    x, p = tokens(1), 5
    # The rule, written out independently of the module under test.
    rule = torch.tensor([[s <= t or (t < p and s < p) for s in range(SEQ)] for t in range(SEQ)])
    dtype = torch.bool if attn == "sdpa" else torch.float32
    mask = hf_attention_mask("prefix", SEQ, p, dtype)
    assert torch.equal(mask[0, 0] if dtype == torch.bool else mask[0, 0] == 0, rule)
    with torch.no_grad():
        ours = net(x, prefix_lengths=torch.tensor([[0, p]]))
        theirs = hf(input_ids=x, attention_mask=mask).logits
        causal = hf(input_ids=x).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    # The mask matters: run causally, the prefix positions differ.
    assert not torch.allclose(causal[:, : p - 1], ours[:, : p - 1], atol=1e-3)


def test_untied_gqa_with_tokenizer_exports_lm_head_and_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "a", "b"])}
    data = tmp_path / "data"
    data.mkdir()
    Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(data / "tokenizer.json"))
    ckpt, net = make_checkpoint(
        tmp_path, seed=3, data_path=data, tie_embeddings=False, n_heads=8, n_kv_heads=2
    )
    out = export_hf(ckpt, tmp_path / "hf")
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert torch.equal(weights["lm_head.weight"], net.output.weight)
    assert not torch.equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"])
    assert weights["model.layers.1.self_attn.k_proj.weight"].shape == (2 * 8, 64)
    hf = hf_model(out)
    assert hf.config.num_key_value_heads == 2 and not hf.config.tie_word_embeddings
    assert (hf.config.eos_token_id, hf.config.pad_token_id) == (1, 0)
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, net(x), atol=1e-5, rtol=1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<eos>" and tok.convert_tokens_to_ids("b") == 5
    # A tokenizer whose ids do not fit the model is not this model's: skipped, with a warning.
    small, _ = make_checkpoint(tmp_path / "small", data_path=data, vocab_size=5)
    with pytest.warns(UserWarning, match="beyond the model's vocab_size 5"):
        assert not (export_hf(small, tmp_path / "hf-small") / "tokenizer.json").exists()


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_is_exact(tmp_path, tied):
    ckpt, net = make_checkpoint(
        tmp_path, seed=5, tie_embeddings=tied, visibility="prefix", objective="prefix_lm"
    )
    back = import_hf(export_hf(ckpt, tmp_path / "hf"), tmp_path / "back")
    assert back == (tmp_path / "back" / "checkpoints" / "step_0").resolve()
    cfg = checkpoint_config(back)
    assert dataclasses.asdict(cfg.model) == dataclasses.asdict(net.cfg)
    assert cfg.model.visibility == "prefix"  # carried by config.json's causeway block
    model = materialize(build_model(cfg.model), "cpu", seed=99)
    load_model_weights(back, model)
    a, b = net.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((back / "meta.json").read_text())
    assert meta["provenance"][-1]["conversion"] == "import hf"


def test_import_of_a_sharded_foreign_checkpoint(tmp_path):
    """Written by transformers itself, sharded, without our config block: a causal decoder."""
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 1234.0},
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="100KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    back = import_hf(tmp_path / "hf", tmp_path / "run")
    cfg = checkpoint_config(back)
    m = cfg.model
    assert (m.visibility, m.n_kv_heads, m.rope_theta, m.norm_eps) == ("causal", 1, 1234.0, 1e-5)
    assert not m.tie_embeddings and m.max_seq_len == 128
    net = materialize(build_model(m), "cpu", seed=9).eval()
    load_model_weights(back, net)
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(net(x), hf(input_ids=x).logits, atol=1e-5, rtol=1e-5)
    # A base recipe supplies the other sections and what Llama cannot say.
    based = checkpoint_config(import_hf(tmp_path / "hf", tmp_path / "nd", "tiny-nd-plm"))
    assert (based.name, based.objective.name, based.model.visibility) == (
        "tiny-nd-plm",
        "prefix_lm",
        "prefix",
    )
    assert dataclasses.replace(based.model, visibility="causal") == m
    with pytest.raises(ConfigError, match="max_seq_len"):
        import_hf(tmp_path / "hf", tmp_path / "quick", "quickstart")  # rows of 256 > 128
    assert not (tmp_path / "quick").exists()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ],
)
def test_import_refuses_what_causeway_lacks(tmp_path, change, words):
    ckpt, _ = make_checkpoint(tmp_path)
    out = export_hf(ckpt, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=words):
        import_hf(out, tmp_path / "back")
    assert not (tmp_path / "back").exists()


@pytest.mark.parametrize(
    ("model", "objective", "words"),
    [
        ({"mlp": "geglu"}, "full_lm", "GeGLU is not expressible in Llama; export refused"),
        ({"arch": "encoder_decoder"}, "prefix_lm", "encoder_decoder is not expressible"),
    ],
)
def test_export_refuses_what_llama_cannot_express(tmp_path, model, objective, words):
    ckpt, _ = make_checkpoint(tmp_path, objective=objective, **model)
    with pytest.raises(ValueError, match=words):
        export_hf(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_never_overwrites(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        export_hf(ckpt, taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    for inside in (ckpt, ckpt / "hf"):
        with pytest.raises(ValueError, match="overlaps"):
            export_hf(ckpt, inside)
    assert not (ckpt / "hf").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_hf(ckpt, empty) == empty.resolve()
    with pytest.raises(ValueError, match="not empty"):
        import_hf(empty, taken)
