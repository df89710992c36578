"""Megatron-LM GPT weights as one causeway decoder's state dict.

The legacy layout keeps each rank's slice, so slices are merged first (`merge_legacy`):
- column-parallel (`linear_qkv`, `linear_fc1`): concatenated on the output dimension;
  `linear_fc1` of a gated MLP is [gate; up] within each rank's slice, so the gates and
  the ups are concatenated separately;
- row-parallel (`linear_proj`, `linear_fc2`): concatenated on the input dimension;
- vocabulary-parallel (`word_embeddings`, `output_layer`): concatenated on the rows,
  the vocabulary padding dropped later;
- norms: replicated, rank 0's copy;
- pipeline stages: each file numbers its layers from 0; the stage's (and virtual
  chunk's) offset makes them global.
The torch_dist layout already holds the global tensors, the layers stacked on a
leading dimension (`decoder.layers.mlp.linear_fc1.weight` is [layers, 2 * ffn,
hidden], gates then ups), so it is unstacked (`unstack_dist`).

Then `causeway_state` splits the fused tensors: `linear_qkv` is grouped per query
group (the group's queries, then its key, then its value), `linear_fc1` is [gate; up].
Both Transformer Engine names (`linear_qkv.layer_norm_weight`, the norm fused into the
next linear) and the local ones (`input_layernorm`) are read.
"""

from __future__ import annotations

import re

import torch

from causeway.config import ModelConfig

LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)$")
# Megatron's per-layer name -> causeway's (the fused ones are split in `split_layer`).
LAYER_NAMES = {
    "input_layernorm.weight": "attention_norm.weight",
    "self_attention.linear_qkv.layer_norm_weight": "attention_norm.weight",
    "pre_mlp_layernorm.weight": "mlp_norm.weight",
    "mlp.linear_fc1.layer_norm_weight": "mlp_norm.weight",
    "self_attention.linear_proj.weight": "attention.wo.weight",
    "mlp.linear_fc2.weight": "mlp.w2.weight",
    "self_attention.linear_qkv.weight": None,
    "mlp.linear_fc1.weight": None,
}
TOP_NAMES = {
    "embedding.word_embeddings.weight": "embed.weight",
    "decoder.final_layernorm.weight": "norm.weight",
    "output_layer.weight": "output.weight",
}
# Megatron-LM's pre-core GPT (and Megatron-DeepSpeed's) names -> megatron-core's.
LEGACY_RENAMES = [
    ("language_model.embedding.word_embeddings.", "embedding.word_embeddings."),
    ("language_model.encoder.final_layernorm.", "decoder.final_layernorm."),
    ("language_model.encoder.final_norm.", "decoder.final_layernorm."),
    ("language_model.output_layer.", "output_layer."),
    ("language_model.encoder.layers.", "decoder.layers."),
    (".self_attention.query_key_value.", ".self_attention.linear_qkv."),
    (".self_attention.dense.", ".self_attention.linear_proj."),
    (".post_attention_layernorm.", ".pre_mlp_layernorm."),
    (".post_attention_norm.", ".pre_mlp_layernorm."),
    (".input_norm.", ".input_layernorm."),
    (".mlp.dense_h_to_4h.", ".mlp.linear_fc1."),
    (".mlp.dense_4h_to_h.", ".mlp.linear_fc2."),
]
COLUMN = ("self_attention.linear_qkv.weight", "mlp.linear_fc1.weight")
ROW = ("self_attention.linear_proj.weight", "mlp.linear_fc2.weight")
VOCAB = ("embedding.word_embeddings.weight", "output_layer.weight")


def core_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pre-core names renamed as megatron-core spells them (core names pass through)."""
    out = {}
    for name, tensor in tensors.items():
        for old, new in LEGACY_RENAMES:
            name = name.replace(old, new)
        out[name] = tensor
    return out


def known(name: str) -> bool:
    """Tensors that are weights of the model (not _extra_state, not cached buffers)."""
    return not name.endswith(("_extra_state", "inv_freq")) and "._extra_state" not in name


def merge_legacy(
    shards: dict[tuple[int, int], list[dict[str, torch.Tensor]]], n_layers: int, gated: bool
) -> dict[str, torch.Tensor]:
    """Every rank's slices -> global tensors with global layer numbers."""
    tp = 1 + max(t for t, _ in shards)
    pp = 1 + max(p for _, p in shards)
    chunks = len(shards[(0, 0)])
    per_chunk = n_layers // (pp * chunks)
    if per_chunk * pp * chunks != n_layers:
        raise ValueError(f"{n_layers} layers do not split evenly over {pp} pipeline stages "
                         f"x {chunks} virtual chunks")  # fmt: skip
    merged: dict[str, torch.Tensor] = {}
    for stage in range(pp):
        for chunk in range(chunks):
            offset = chunk * (n_layers // chunks) + stage * per_chunk
            ranks = [core_names(shards[(t, stage)][chunk]) for t in range(tp)]
            for name in ranks[0]:
                if not known(name):
                    continue
                slices = [rank[name] for rank in ranks]
                merged[global_name(name, offset)] = merge_slices(name, slices, gated)
    return merged


def global_name(name: str, offset: int) -> str:
    found = LAYER.match(name)
    if not found:
        return name
    return f"decoder.layers.{int(found.group(1)) + offset}.{found.group(2)}"


def merge_slices(name: str, slices: list[torch.Tensor], gated: bool) -> torch.Tensor:
    if len(slices) == 1:
        return slices[0]
    if name.endswith("mlp.linear_fc1.weight") and gated:
        gates, ups = zip(*(s.chunk(2, dim=0) for s in slices), strict=True)
        return torch.cat([*gates, *ups], dim=0)
    if name.endswith(COLUMN) or name in VOCAB:
        return torch.cat(slices, dim=0)
    if name.endswith(ROW):
        return torch.cat(slices, dim=1)
    return slices[0]  # replicated: norms


def unstack_dist(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`decoder.layers.X` [layers, ...] -> `decoder.layers.{i}.X`."""
    out = {}
    for name, tensor in tensors.items():
        if not known(name):
            continue
        if name.startswith("decoder.layers."):
            rest = name[len("decoder.layers.") :]
            for i, layer in enumerate(tensor.unbind(0)):
                out[f"decoder.layers.{i}.{rest}"] = layer
        else:
            out[name] = tensor
    return out


def causeway_state(merged: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    """Global Megatron tensors -> causeway names, fused tensors split, padding dropped."""
    refuse_unknown(merged)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in merged.items():
        found = LAYER.match(name)
        if found:
            layer, rest = int(found.group(1)), found.group(2)
            for sub, part in split_layer(rest, tensor, m).items():
                state[f"layers.{layer}.{sub}"] = part
        elif name == "output_layer.weight" and m.tie_embeddings:
            continue  # the last stage's copy of the tied embedding
        else:
            state[TOP_NAMES[name]] = tensor[: m.vocab_size] if name in VOCAB else tensor
    return {k: v.contiguous() for k, v in state.items()}


def split_layer(rest: str, tensor: torch.Tensor, m: ModelConfig) -> dict[str, torch.Tensor]:
    if rest == "self_attention.linear_qkv.weight":
        per_group, hd = m.n_heads // m.kv_heads, m.dim_per_head
        grouped = tensor.reshape(m.kv_heads, per_group + 2, hd, tensor.shape[-1])
        return {
            "attention.wq.weight": grouped[:, :per_group].reshape(-1, tensor.shape[-1]),
            "attention.wk.weight": grouped[:, per_group].reshape(-1, tensor.shape[-1]),
            "attention.wv.weight": grouped[:, per_group + 1].reshape(-1, tensor.shape[-1]),
        }
    if rest == "mlp.linear_fc1.weight":
        gate, up = tensor.chunk(2, dim=0)
        return {"mlp.w1.weight": gate, "mlp.w3.weight": up}
    return {LAYER_NAMES[rest]: tensor}


def refuse_unknown(merged: dict[str, torch.Tensor]) -> None:
    """Biases, LayerNorm biases, experts...: whatever the names cannot map is named."""
    strange = []
    for name in merged:
        found = LAYER.match(name)
        if not (name in TOP_NAMES or (found and found.group(2) in LAYER_NAMES)):
            strange.append(name)
    if strange:
        hint = " (biases: causeway linears and norms have none)" if any(
            n.endswith("bias") for n in strange) else ""  # fmt: skip
        raise ValueError(f"tensors causeway has no place for: {sorted(strange)[:6]}{hint}")
