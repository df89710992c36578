"""`causeway convert import-megatron` and `import-deepspeed`: another trainer's
checkpoint as a committed causeway checkpoint (OUT/checkpoints/step_0), ready for
`convert arch`, `export-hf` and `train --init-from`.

The model section comes from the checkpoint's saved Megatron args where it has them,
else from `--recipe`; the recipe (else the defaults) gives every other section, and the
visibility, dropout and attention backend, which the args do not decide.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from causeway.config import ModelConfig, RunConfig, load_config
from causeway.config.checks import check_config
from causeway.convert.checkpoints import fresh_output, save_imported
from causeway.convert.foreign.deepspeed_files import read_deepspeed
from causeway.convert.foreign.megatron_files import MegatronFiles, read_megatron
from causeway.convert.foreign.megatron_model import (
    args_dict,
    check_args,
    model_config_from_args,
)
from causeway.convert.foreign.megatron_weights import (
    causeway_state,
    core_names,
    merge_legacy,
    unstack_dist,
)
from causeway.convert.foreign.pickles import require_trust
from causeway.convert.hf_export import causeway_names
from causeway.convert.hf_import import fit_defaults, map_hf_weights

EMBEDDING = "embedding.word_embeddings.weight"


def import_megatron(
    source: Path,
    out: Path,
    iteration: int | None = None,
    recipe: str | None = None,
    trust_pickle: bool = False,
) -> Path:
    source = Path(source)
    require_trust(trust_pickle, source, "Megatron-LM")
    out = fresh_output(out, source)
    files = read_megatron(source, iteration)
    cfg = base_config(recipe)
    where = files.directory
    if files.args is not None:
        args = check_args(files.args, f"{where} (its saved args)")
        check_layout(files, args)
        merged = global_tensors(files, args["num_layers"])
        rows = merged[EMBEDDING].shape[0]
        cfg.model = model_config_from_args(args, rows, cfg.model if recipe else None)
    elif recipe:
        merged = global_tensors(files, cfg.model.n_layers)
    else:
        raise ValueError(f"{where}: no saved args to read the model's settings from; pass "
                         "--recipe with a model section that describes it")  # fmt: skip
    cfg = finish(cfg, recipe)
    state = causeway_state(merged, cfg.model)
    return save_imported(cfg, state, out, where, f"import megatron ({saved_layout(files)})")


def global_tensors(files: MegatronFiles, n_layers: int) -> dict[str, torch.Tensor]:
    if files.layout == "legacy":
        return merge_legacy(files.shards, n_layers, gated=True)
    return unstack_dist(files.tensors)


def saved_layout(files: MegatronFiles) -> str:
    """The layout it was saved from: the shard grid, or (torch_dist holds global
    tensors) what the args say."""
    if files.layout == "legacy":
        tp, pp = files.tensor_parallel, files.pipeline_parallel
    else:
        args = args_dict(files.args)
        tp = args.get("tensor_model_parallel_size", "?")
        pp = args.get("pipeline_model_parallel_size", "?")
    return f"{files.layout}, tp {tp}, pp {pp}"


def check_layout(files: MegatronFiles, args: dict) -> None:
    """The shards found are the layout the args were saved with (legacy only)."""
    if files.layout != "legacy":
        return
    saved = (args.get("tensor_model_parallel_size", 1), args.get("pipeline_model_parallel_size", 1))
    found = (files.tensor_parallel, files.pipeline_parallel)
    if saved != found:
        raise ValueError(f"{files.directory}: the args say tensor x pipeline parallel {saved}, "
                         f"the shard directories make {found}")  # fmt: skip


def import_deepspeed(
    source: Path,
    out: Path,
    tag: str | None = None,
    recipe: str | None = None,
    trust_pickle: bool = False,
) -> Path:
    source = Path(source)
    require_trust(trust_pickle, source, "DeepSpeed")
    out = fresh_output(out, source)
    tensors, args = read_deepspeed(source, tag)
    cfg = base_config(recipe)
    if args is not None:  # Megatron-DeepSpeed saves its args with the module
        checked = check_args(args, f"{source} (its saved args)")
        merged = core_names(tensors)
        cfg.model = model_config_from_args(
            checked, merged[EMBEDDING].shape[0], cfg.model if recipe else None
        )
        cfg = finish(cfg, recipe)
        state = causeway_state(merged, cfg.model)
    elif recipe:
        cfg = finish(cfg, recipe)
        state = module_state(tensors, cfg.model)
    else:
        raise ValueError(f"{source}: a DeepSpeed checkpoint of a plain module says nothing of "
                         "the model's settings; pass --recipe with a model section that "
                         "describes it")  # fmt: skip
    return save_imported(cfg, state, out, source, "import deepspeed")


def module_state(tensors: dict[str, torch.Tensor], m: ModelConfig) -> dict[str, torch.Tensor]:
    """A plain module's names -> causeway's: causeway's own (under any wrapper prefix),
    Hugging Face Llama's, or Megatron's."""
    hf = causeway_names(m.n_layers, m.tie_embeddings)
    for prefix in common_prefixes(tensors):
        named = {k[len(prefix) :]: v for k, v in tensors.items()}
        if "embed.weight" in named:
            return named
        if "model.embed_tokens.weight" in named or set(named) & set(hf):
            return map_hf_weights(named, m)
        if EMBEDDING in core_names(named):
            return causeway_state(core_names(named), m)
    raise ValueError(
        f"parameter names of neither causeway, Hugging Face Llama nor Megatron: "
        f"{sorted(tensors)[:5]}"
    )


def common_prefixes(tensors: dict) -> list[str]:
    """ "" and each leading dotted prefix every name shares ("module.", "model.")."""
    names = list(tensors)
    prefixes = [""]
    parts = names[0].split(".")[:-1] if names else []
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i]) + "."
        if all(n.startswith(prefix) for n in names):
            prefixes.append(prefix)
    return prefixes


def base_config(recipe: str | None) -> RunConfig:
    return copy.deepcopy(load_config(recipe) if recipe else RunConfig())


def finish(cfg: RunConfig, recipe: str | None) -> RunConfig:
    if not recipe:
        fit_defaults(cfg)
    return check_config(cfg)
