"""Megatron-LM's saved `args` as a causeway model section, and what cannot be one.

A causeway decoder is Megatron's GPT with `--normalization RMSNorm --swiglu
--disable-bias-linear --position-embedding-type rope` (and optionally grouped-query
attention and untied output weights): every other choice changes the function the
weights compute, so it is refused by name rather than imported approximately.
"""

from __future__ import annotations

import copy
from typing import Any

from causeway.config import ModelConfig

# Megatron-LM's defaults for the args an older checkpoint may not have saved.
DEFAULTS = {
    "normalization": "LayerNorm",
    "swiglu": False,
    "add_bias_linear": True,
    "add_qkv_bias": False,
    "position_embedding_type": "learned_absolute",
    "untie_embeddings_and_output_weights": False,
    "rotary_percent": 1.0,
    "rotary_interleaved": False,
    "rotary_base": 10000,
    "norm_epsilon": 1e-5,
    "group_query_attention": False,
    "num_experts": None,
}


def args_dict(args: Any) -> dict:
    if args is None:
        return {}
    return dict(vars(args)) if hasattr(args, "__dict__") else dict(args)


def unsupported(a: dict) -> list[str]:
    """Each saved setting causeway cannot represent, said the way Megatron spells it."""
    get = lambda key: a.get(key, DEFAULTS.get(key))  # noqa: E731
    position = get("position_embedding_type")
    if a.get("use_rotary_position_embeddings"):  # the pre-0.5 spelling of rope
        position = "rope"
    checks = [
        (get("normalization") != "RMSNorm",
         f"normalization {get('normalization')} (causeway has RMSNorm only)"),
        (get("add_bias_linear"), "add_bias_linear (linear biases; causeway has none)"),
        (get("add_qkv_bias"), "add_qkv_bias (attention biases; causeway has none)"),
        (position != "rope",
         f"position_embedding_type {position} (causeway has rotary positions only)"),
        (not get("swiglu"),
         f"swiglu false (a non-gated {activation(a)} MLP; causeway's is gated SiLU)"),
        (get("rotary_percent") != 1.0,
         f"rotary_percent {get('rotary_percent')} (causeway rotates the whole head)"),
        (get("rotary_interleaved"), "rotary_interleaved (causeway rotates halves)"),
        (a.get("rotary_seq_len_interpolation_factor"),
         "rotary_seq_len_interpolation_factor (no RoPE scaling in causeway)"),
        (a.get("use_rope_scaling"), "use_rope_scaling (no RoPE scaling in causeway)"),
        (a.get("apply_layernorm_1p"), "apply_layernorm_1p (zero-centred norm weights)"),
        (a.get("qk_layernorm"), "qk_layernorm (no query/key norms in causeway)"),
        (get("num_experts"), f"num_experts {get('num_experts')} (causeway models are dense)"),
        (a.get("multi_latent_attention"), "multi_latent_attention"),
        (a.get("decoder_first_pipeline_num_layers") or a.get("num_layers_in_first_pipeline_stage"),
         "an uneven pipeline split (first/last stage layer counts)"),
    ]  # fmt: skip
    return [why for bad, why in checks if bad]


def activation(a: dict) -> str:
    return "squared-ReLU" if a.get("squared_relu") else "GELU"


def model_config_from_args(
    args: Any, embedding_rows: int, base: ModelConfig | None = None
) -> ModelConfig:
    """The model section Megatron's args describe. `embedding_rows` is the (padded)
    vocabulary of the merged embedding; the unpadded `vocab_size` wins where saved.
    Visibility, dropout and attention backend come from `base` (a recipe), else a
    causal decoder without dropout."""
    a = args_dict(args)
    m = copy.deepcopy(base) if base is not None else ModelConfig()
    heads, hidden = a["num_attention_heads"], a["hidden_size"]
    groups = a.get("num_query_groups") if a.get("group_query_attention") else None
    head_dim = a.get("kv_channels") or hidden // heads
    m.arch, m.mlp = "decoder", "swiglu"
    m.visibility = m.visibility or "causal"
    m.vocab_size = a.get("vocab_size") or embedding_rows
    m.d_model, m.n_layers, m.n_heads, m.n_encoder_layers = hidden, a["num_layers"], heads, 0
    m.d_ff = a.get("ffn_hidden_size") or 4 * hidden
    m.n_kv_heads = groups if groups and groups != heads else None
    m.head_dim = head_dim if head_dim != hidden // heads else None
    m.tie_embeddings = not a.get("untie_embeddings_and_output_weights", False)
    m.rope_theta = float(a.get("rotary_base", DEFAULTS["rotary_base"]))
    m.norm_eps = float(a.get("norm_epsilon", a.get("layernorm_epsilon", 1e-5)))
    m.max_seq_len = a.get("max_position_embeddings") or a.get("seq_length") or m.max_seq_len
    m.init_std = float(a.get("init_method_std", m.init_std))
    return m


REQUIRED = ("num_layers", "hidden_size", "num_attention_heads")


def check_args(args: Any, where: str) -> dict:
    a = args_dict(args)
    missing = [key for key in REQUIRED if not a.get(key)]
    if missing:
        raise ValueError(f"{where}: the saved args lack {', '.join(missing)}")
    refused = unsupported(a)
    if refused:
        raise ValueError(f"{where}: not importable: {'; '.join(refused)}")
    return a
