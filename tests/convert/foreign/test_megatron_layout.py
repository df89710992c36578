"""The legacy merge against shards written here in Megatron's exact layout from a model
whose merged weights are known: tensor parallel 2 x pipeline parallel 2 x 2 virtual
chunks (the interleaved schedule's `model0`, `model1`), which the megatron-core writer
does not cover, and Megatron-LM's pre-core nested names."""

from __future__ import annotations

import argparse

import torch

from causeway.config import ModelConfig
from causeway.convert.checkpoints import load_checkpoint_model
from causeway.convert.foreign.importers import import_megatron

M = ModelConfig(vocab_size=96, d_model=32, n_layers=8, n_heads=4, n_kv_heads=2, d_ff=48,
                tie_embeddings=False, max_seq_len=32)  # fmt: skip
TP, PP, CHUNKS = 2, 2, 2


def known_weights() -> dict[str, torch.Tensor]:
    from causeway.models import build_model, materialize

    model = materialize(build_model(M), "cpu", seed=3)
    for name, p in model.named_parameters():  # norms random too: a swap cannot pass
        if name.endswith("norm.weight"):
            p.data.uniform_(0.5, 1.5)
    return model.state_dict()


def megatron_layer(w: dict, i: int, rank: int) -> dict[str, torch.Tensor]:
    """Layer i as tensor rank `rank` holds it, under megatron-core's local names."""
    hd, per_group, groups = M.d_model // M.n_heads, M.n_heads // M.kv_heads, M.kv_heads
    q = w[f"layers.{i}.attention.wq.weight"].view(groups, per_group, hd, -1)
    k = w[f"layers.{i}.attention.wk.weight"].view(groups, 1, hd, -1)
    v = w[f"layers.{i}.attention.wv.weight"].view(groups, 1, hd, -1)
    qkv = torch.cat([q, k, v], dim=1).chunk(TP, dim=0)[rank].reshape(-1, M.d_model)
    gate = w[f"layers.{i}.mlp.w1.weight"].chunk(TP)[rank]
    up = w[f"layers.{i}.mlp.w3.weight"].chunk(TP)[rank]
    return {
        "input_layernorm.weight": w[f"layers.{i}.attention_norm.weight"],
        "self_attention.linear_qkv.weight": qkv,
        "self_attention.linear_proj.weight": w[f"layers.{i}.attention.wo.weight"].chunk(TP, dim=1)[
            rank
        ],  # fmt: skip
        "pre_mlp_layernorm.weight": w[f"layers.{i}.mlp_norm.weight"],
        "mlp.linear_fc1.weight": torch.cat([gate, up]),
        "mlp.linear_fc2.weight": w[f"layers.{i}.mlp.w2.weight"].chunk(TP, dim=1)[rank],
    }


def write_shards(w: dict, root, nested: bool) -> None:
    padded = torch.cat([w["embed.weight"], torch.randn(32, M.d_model)])  # 96 -> 128 rows
    output = torch.cat([w["output.weight"], torch.randn(32, M.d_model)])
    per_chunk = M.n_layers // (PP * CHUNKS)
    args = argparse.Namespace(
        num_layers=M.n_layers, hidden_size=M.d_model, ffn_hidden_size=M.d_ff,
        num_attention_heads=M.n_heads, group_query_attention=True, num_query_groups=2,
        normalization="RMSNorm", swiglu=True, add_bias_linear=False,
        position_embedding_type="rope", untie_embeddings_and_output_weights=True,
        vocab_size=M.vocab_size, padded_vocab_size=128, max_position_embeddings=32,
        norm_epsilon=M.norm_eps, tensor_model_parallel_size=TP,
        pipeline_model_parallel_size=PP, virtual_pipeline_model_parallel_size=CHUNKS,
    )  # fmt: skip
    for rank in range(TP):
        for stage in range(PP):
            saved = {"args": args, "iteration": 0, "checkpoint_version": 3.0}
            for chunk in range(CHUNKS):
                offset = chunk * (M.n_layers // CHUNKS) + stage * per_chunk
                state = {}
                for local in range(per_chunk):
                    for name, t in megatron_layer(w, offset + local, rank).items():
                        state[f"decoder.layers.{local}.{name}"] = t.clone()
                if stage == 0 and chunk == 0:
                    state["embedding.word_embeddings.weight"] = padded.chunk(TP)[rank].clone()
                if stage == PP - 1 and chunk == CHUNKS - 1:
                    state["decoder.final_layernorm.weight"] = w["norm.weight"].clone()
                    state["output_layer.weight"] = output.chunk(TP)[rank].clone()
                saved[f"model{chunk}"] = pre_core(state) if nested else state
            path = root / "release" / f"mp_rank_{rank:02d}_{stage:03d}" / "model_optim_rng.pt"
            path.parent.mkdir(parents=True)
            torch.save(saved, path)
    (root / "latest_checkpointed_iteration.txt").write_text("release")


def pre_core(state: dict) -> dict:
    """Megatron-LM's pre-core GPT: nested {"language_model": {...}} and the old names."""
    renames = [("embedding.word_embeddings.", "embedding.word_embeddings."),
               ("decoder.final_layernorm.", "encoder.final_layernorm."),
               ("decoder.layers.", "encoder.layers."), ("output_layer.", "output_layer."),
               ("linear_qkv.", "query_key_value."), ("linear_proj.", "dense."),
               ("pre_mlp_layernorm.", "post_attention_layernorm."),
               ("linear_fc1.", "dense_h_to_4h."), ("linear_fc2.", "dense_4h_to_h.")]  # fmt: skip
    nested: dict = {"language_model": {"embedding": {}, "encoder": {}}}
    for name, tensor in state.items():
        for old, new in renames:
            name = name.replace(old, new)
        head, _, rest = name.partition(".")
        nested["language_model"].setdefault(head, {})[rest] = tensor
    return nested


def test_virtual_pipeline_chunks_and_pre_core_names_merge_exactly(tmp_path):
    want = known_weights()
    for nested in (False, True):
        root = tmp_path / f"nested{nested}"
        write_shards(want, root, nested)
        checkpoint = import_megatron(root, tmp_path / f"run{nested}", trust_pickle=True)
        got = load_checkpoint_model(checkpoint).state_dict()
        assert got.keys() == want.keys()
        differ = [k for k in want if not torch.equal(got[k], want[k])]
        assert not differ, differ
