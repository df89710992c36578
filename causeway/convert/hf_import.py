"""Import a Hugging Face Llama checkpoint as a committed causeway checkpoint (see `hf`)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch

from causeway.config import ModelConfig, RunConfig, load_config
from causeway.config.checks import check_config
from causeway.convert.checkpoints import fresh_output, save_imported
from causeway.convert.hf_export import CONFIG, INDEX, WEIGHTS, causeway_names

# With no base recipe, an objective that the imported visibility allows.
DEFAULT_OBJECTIVE = {"causal": "full_lm", "prefix": "prefix_lm", "bidirectional": "masked_lm"}


def read_hf_config(hf_dir: Path) -> dict:
    path = Path(hf_dir) / CONFIG
    if not Path(hf_dir).is_dir():
        raise ValueError(f"{hf_dir} is not a directory (a Hugging Face model directory)")
    if not path.is_file():
        raise ValueError(f"{hf_dir} has no {CONFIG}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a Hugging Face config (a JSON object)")
    refused = []
    if config.get("model_type", "llama") != "llama":
        refused.append(f"model_type {config['model_type']!r} (only llama)")
    if config.get("attention_bias"):
        refused.append("attention_bias true (causeway attention has no biases)")
    if config.get("mlp_bias"):
        refused.append("mlp_bias true (causeway MLP has no biases)")
    if config.get("hidden_act", "silu") != "silu":
        refused.append(f"hidden_act {config['hidden_act']!r} (causeway's Llama MLP is silu)")
    if config.get("rope_scaling"):
        refused.append(f"rope_scaling {config['rope_scaling']} (causeway has plain RoPE)")
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        refused.append(f"rope_parameters.rope_type {rope['rope_type']!r} (only default)")
    if config.get("pretraining_tp", 1) not in (1, None):
        refused.append(f"pretraining_tp {config['pretraining_tp']}")
    needed = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads")  # fmt: skip
    refused += [f"no {key}" for key in needed if key not in config]
    if refused:
        raise ValueError(f"{path}: not importable: {'; '.join(refused)}")
    return config


# What Llama cannot say; a base recipe decides these, else the `causeway` block.
NOT_IN_LLAMA = ("visibility", "dropout", "attention")


def model_config_from_hf(config: dict, base: ModelConfig | None = None) -> ModelConfig:
    """Llama's fields decide; `base` (a recipe's model section), else the `causeway` block
    of our own exports, fills in the rest; a foreign checkpoint is a causal decoder."""
    block = (config.get("causeway") or {}).get("model") or {}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    m = ModelConfig(**{k: v for k, v in block.items() if k in known})
    if base is not None:
        for name in NOT_IN_LLAMA:
            setattr(m, name, getattr(base, name))
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    rope = config.get("rope_parameters") or {}
    m.arch, m.mlp = "decoder", "swiglu"
    if m.visibility is None:
        m.visibility = "causal"
    m.vocab_size, m.d_model, m.d_ff = config["vocab_size"], hidden, config["intermediate_size"]
    m.n_layers, m.n_heads, m.n_encoder_layers = config["num_hidden_layers"], heads, 0
    # Keep the block's "same as default" spelling (None) when it means the same thing.
    if m.kv_heads != kv_heads:
        m.n_kv_heads = kv_heads
    if m.dim_per_head != head_dim:
        m.head_dim = head_dim
    m.tie_embeddings = bool(config.get("tie_word_embeddings", False))
    m.rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    m.norm_eps = float(config.get("rms_norm_eps", 1e-6))
    m.max_seq_len = config.get("max_position_embeddings", m.max_seq_len)
    m.init_std = float(config.get("initializer_range", m.init_std))
    return m


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors, or of the shards listed in the index json."""
    from safetensors.torch import load_file

    hf_dir = Path(hf_dir)
    if (hf_dir / WEIGHTS).is_file():
        return load_file(str(hf_dir / WEIGHTS))
    if not (hf_dir / INDEX).is_file():
        raise ValueError(f"{hf_dir} has neither {WEIGHTS} nor {INDEX}")
    weight_map = json.loads((hf_dir / INDEX).read_text())["weight_map"]
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(load_file(str(hf_dir / shard)))
    missing = set(weight_map) - set(tensors)
    if missing:
        raise ValueError(f"{INDEX} lists tensors its shards lack: {sorted(missing)[:5]}")
    return tensors


def map_hf_weights(tensors: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    names = causeway_names(m.n_layers, m.tie_embeddings)
    if m.tie_embeddings and "lm_head.weight" in tensors:
        head = tensors.pop("lm_head.weight")
        if not torch.equal(head, tensors.get("model.embed_tokens.weight", head)):
            raise ValueError("tie_word_embeddings is true but lm_head differs from embed_tokens")
    missing, unknown = set(names) - set(tensors), set(tensors) - set(names)
    if missing or unknown:
        raise ValueError(
            f"weights do not match the Llama config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unknown)[:5]}"
        )
    return {names[k]: v for k, v in tensors.items()}


def import_hf(hf_dir: Path, out: Path, base_recipe: str | None = None) -> Path:
    """A HF Llama checkpoint -> committed causeway checkpoint OUT/checkpoints/step_0.

    The model section comes from config.json (visibility, dropout and attention backend
    from `base_recipe` when given); every other section is the defaults, or the
    recipe's. Refuses what causeway lacks (biases, rope scaling, non-silu MLPs).
    Returns the checkpoint directory.
    """
    hf_dir = Path(hf_dir)
    out = fresh_output(out, hf_dir)
    config = read_hf_config(hf_dir)
    cfg = load_config(base_recipe) if base_recipe else RunConfig()
    cfg = copy.deepcopy(cfg)
    cfg.model = model_config_from_hf(config, cfg.model if base_recipe else None)
    if not base_recipe:  # defaults that fit the model: row length, an allowed objective
        fit_defaults(cfg)
    cfg = check_config(cfg)
    state = map_hf_weights(read_hf_weights(hf_dir), cfg.model)
    return save_imported(cfg, state, out, hf_dir, "import hf")


def fit_defaults(cfg: RunConfig) -> None:
    """Without a recipe: a row length the model takes and an objective its visibility
    allows."""
    cfg.data.seq_len = min(cfg.data.seq_len, cfg.model.max_seq_len)
    cfg.objective.name = DEFAULT_OBJECTIVE[cfg.model.visibility]
