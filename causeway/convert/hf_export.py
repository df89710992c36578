"""Export a causeway decoder checkpoint as a Hugging Face Llama checkpoint (see `hf`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path

import torch

from causeway.config import ModelConfig, RunConfig
from causeway.convert.checkpoints import fresh_output

LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "mlp.w1.weight": "mlp.gate_proj.weight",
    "mlp.w3.weight": "mlp.up_proj.weight",
    "mlp.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
}
TOP_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
SPECIAL_TOKENS = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}
WEIGHTS, INDEX, CONFIG, TOKENIZER = (
    "model.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "tokenizer.json",
)


def hf_name(name: str) -> str:
    """causeway state-dict name -> HF Llama name."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    _, index, rest = name.split(".", 2)  # layers.{i}.rest
    return f"model.layers.{index}.{LAYER_NAMES[rest]}"


def causeway_names(n_layers: int, tied: bool) -> dict[str, str]:
    """HF name -> causeway name for every parameter of a decoder."""
    names = {hf: cw for cw, hf in TOP_NAMES.items() if not (tied and cw == "output.weight")}
    for i in range(n_layers):
        for cw, hf in LAYER_NAMES.items():
            names[f"model.layers.{i}.{hf}"] = f"layers.{i}.{cw}"
    return names


def check_exportable(m: ModelConfig) -> None:
    if m.arch != "decoder":
        raise ValueError(f"arch {m.arch} is not expressible in Llama (a decoder); export refused")
    if m.mlp != "swiglu":
        raise ValueError("GeGLU is not expressible in Llama; export refused (its MLP is SwiGLU)")
    if m.d_model % m.n_heads:
        raise ValueError(
            f"d_model {m.d_model} is not a multiple of n_heads {m.n_heads}: transformers' "
            "LlamaConfig refuses that; export refused"
        )


def llama_config(m: ModelConfig, tokens: dict[str, int]) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": m.vocab_size,
        "hidden_size": m.d_model,
        "intermediate_size": m.d_ff,
        "num_hidden_layers": m.n_layers,
        "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.kv_heads,
        "head_dim": m.dim_per_head,
        "hidden_act": "silu",
        "max_position_embeddings": m.max_seq_len,
        "rms_norm_eps": m.norm_eps,
        # transformers 4.x reads rope_theta, 5.x rope_parameters.
        "rope_theta": m.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
        "rope_scaling": None,
        "tie_word_embeddings": m.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": m.init_std,
        "torch_dtype": "float32",
        "dtype": "float32",
        "use_cache": True,
        **{f"{kind}_token_id": tokens.get(kind) for kind in ("bos", "eos", "pad")},
        "causeway": {"model": dataclasses.asdict(m)},
    }


def find_tokenizer(cfg: RunConfig) -> Path | None:
    """The run's tokenizer.json, if its dataset is on this machine (never builds one)."""
    d = cfg.data
    candidates = [Path(e.path) for e in d.mixture]
    if d.path:
        candidates.append(Path(d.path))
    elif d.source != "path":
        from causeway.train.data import builtin_data_dir

        candidates.append(builtin_data_dir(d.source))
    found = [c / TOKENIZER for c in candidates if (c / TOKENIZER).is_file()]
    return found[0] if found else None


def fitting_tokenizer(cfg: RunConfig) -> tuple[Path | None, dict[str, int]]:
    """The run's tokenizer.json and its special-token ids; (None, {}) if absent or if its ids
    do not fit the model's vocabulary (then it is not this model's tokenizer: warn, skip)."""
    tokenizer = find_tokenizer(cfg)
    if tokenizer is None:
        return None, {}
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab(with_added_tokens=True)
    if max(vocab.values(), default=-1) >= cfg.model.vocab_size:
        warnings.warn(
            f"{tokenizer} has ids beyond the model's vocab_size {cfg.model.vocab_size}; "
            "exporting without a tokenizer",
            stacklevel=2,
        )
        return None, {}
    return tokenizer, {kind: vocab[t] for kind, t in SPECIAL_TOKENS.items() if t in vocab}


def write_tokenizer(tokenizer: Path, tokens: dict[str, int], out: Path) -> None:
    shutil.copyfile(tokenizer, out / TOKENIZER)
    config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    config.update({f"{kind}_token": SPECIAL_TOKENS[kind] for kind in tokens})
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def export_hf(checkpoint: Path, out_dir: Path, allow_partial: bool = False) -> Path:
    """Write a committed causeway decoder checkpoint as a HF Llama checkpoint in `out_dir`.

    Refuses encoder-decoders and GeGLU MLPs (not expressible in Llama). A prefix or
    bidirectional decoder exports, but needs a 4-D mask at inference (`hf_attention_mask`).
    Files are written to a temporary sibling and renamed, so `out_dir` is never partial.
    """
    from causeway.convert.checkpoints import (
        checkpoint_config,
        load_checkpoint_model,
        readable_checkpoint,
    )

    source = readable_checkpoint(checkpoint, allow_partial)
    out_dir = fresh_output(out_dir, source)
    cfg = checkpoint_config(source)
    check_exportable(cfg.model)
    model = load_checkpoint_model(source, allow_partial)
    tensors = {hf_name(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    tokenizer, tokens = fitting_tokenizer(cfg)

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_safetensors(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
        config = llama_config(cfg.model, tokens)
        config["causeway"]["source"] = str(source)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer is not None:
            write_tokenizer(tokenizer, tokens, tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict) -> None:
    """The safetensors format written straight from each tensor's memory.

    `safetensors.torch.save_file` first builds the whole file as one bytes object (a copy
    of every weight); streaming the buffers halves the export time of a 1 GB model here.
    Layout: 8-byte little-endian header size, JSON header (padded to 8 bytes), data.
    """
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for tensor in tensors.values():
            flat = tensor.contiguous().view(-1)
            handle.write(flat.view(torch.uint8).numpy().data)


def hf_attention_mask(
    visibility: str, seq_len: int, prefix_length: int = 0, dtype: torch.dtype = torch.bool
) -> torch.Tensor:
    """[1, 1, T, T] mask for one unpacked row, for `LlamaForCausalLM(attention_mask=...)`.

    bool (True = may attend) suits attn_implementation "sdpa"; a float dtype gives the
    additive form (0 / the dtype's min) that "eager" needs. Prefix rule: t sees s iff s <= t or both
    lie in the prefix [0, prefix_length).
    """
    idx = torch.arange(seq_len)
    allowed = idx[None, :] <= idx[:, None]
    if visibility == "prefix":
        in_prefix = idx < prefix_length
        allowed = allowed | (in_prefix[:, None] & in_prefix[None, :])
    elif visibility == "bidirectional":
        allowed = torch.ones_like(allowed)
    elif visibility != "causal":
        raise ValueError(f"unknown visibility {visibility!r}")
    if dtype == torch.bool:
        return allowed[None, None]
    zero = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[None, None]
