"""What a run reads, checked before anything is written or started.

`causeway train` and `causeway launch local` call `check_run_inputs` once the config is
resolved: the run directory, the layout against the world size, the prepared datasets
(index.json, tokenizer, shards) and the checkpoints named by `checkpoint.init_from` and
`checkpoint.resume`. Every problem is one `ConfigError` line naming the key or flag and the
file, which the CLI prints with exit status 2; the checks only read, so a refused run leaves
nothing behind. They are cheap: no shard is hashed (`causeway data inspect DIR --verify`
reads every byte), sizes are compared with index.json.

The Slurm and Ray launchers check only the config and the layout: their workers may see
another filesystem than the machine that submits.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from causeway.config import ConfigError, RunConfig

# ModelConfig values (and properties) that decide the shapes of the stored tensors.
SHAPE_FIELDS = ("arch", "vocab_size", "d_model", "n_layers", "n_heads", "kv_heads",
                "dim_per_head", "d_ff", "tie_embeddings")  # fmt: skip
KEY_OF = {"kv_heads": "n_kv_heads", "dim_per_head": "head_dim",
          "encoder_layers": "n_encoder_layers"}  # fmt: skip


def check_run_inputs(
    cfg: RunConfig, run_dir: Path | None, world_size: int | None = None, flags: dict | None = None
) -> None:
    """Refuse, in one line, a run that cannot start from what it is given. `flags` names the
    CLI flag behind a config key (`{"checkpoint.init_from": "--init-from"}`)."""
    from causeway.parallel.dims import ParallelDims

    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    ParallelDims.from_config(copy.deepcopy(cfg), world_size)
    if run_dir is not None:
        check_run_dir(cfg, Path(run_dir))
    check_data_inputs(cfg)
    check_checkpoints(cfg, None if run_dir is None else Path(run_dir), flags or {})


def check_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    from causeway.checkpoint.discovery import step_dirs

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} is a file, not a directory")
    steps = [path.name for _, path in step_dirs(run_dir)]
    if steps and cfg.checkpoint.resume == "none":
        shown = ", ".join(steps[-3:])
        raise ConfigError(
            f"run dir {run_dir} already holds checkpoints of an earlier run ({shown}); continue "
            "it with --set checkpoint.resume=auto, or choose another --run-dir"
        )


def check_data_inputs(cfg: RunConfig) -> None:
    from causeway.data_pipeline.shards.urls import is_local
    from causeway.train.data import builtin_data_dir

    d, vocab = cfg.data, cfg.model.vocab_size
    if d.mixture:
        for i, entry in enumerate(d.mixture):
            if is_local(entry.path) and not entry.shards:
                check_dataset(entry.path, f"data.mixture[{i}].path", vocab)
    elif d.source == "path":
        if is_local(d.path):
            check_dataset(d.path, "data.path", vocab)
    else:
        path = Path(d.path) if d.path else builtin_data_dir(d.source)
        if (path / "index.json").is_file():  # else it is built on first use
            label = "the builtin corpus" if d.source == "builtin" else "the builtin mtf tasks"
            check_dataset(path, label, vocab)


def open_dataset(location: str | Path, key: str):
    """(index, tokenizer) of a local prepared dataset, or a one-line error naming `key`."""
    from causeway.data_pipeline.shards.index import read_index
    from causeway.data_pipeline.shards.urls import local_path

    path = Path(local_path(str(location)))
    if not path.exists():
        raise ConfigError(f"{key} '{location}' does not exist")
    if not path.is_dir():
        raise ConfigError(f"{key} '{location}' is not a directory (a prepared dataset)")
    if not (path / "index.json").is_file():
        raise ConfigError(
            f"{key} '{location}' has no index.json: not a prepared dataset (or its preparation "
            "did not finish); run `causeway data prepare`"
        )
    try:
        index = read_index(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from None
    return index, read_tokenizer(path / str(index["tokenizer"]), f"{key}: tokenizer")


def read_tokenizer(path: Path, what: str):
    """The tokenizer at `path`, or one line saying why it cannot be read."""
    from causeway.data_pipeline.tokenizer import Tokenizer

    if Path(path).is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a tokenizer.json")
    if not Path(path).is_file():
        raise ConfigError(f"{what} {path} not found")
    try:
        return Tokenizer.from_file(path)
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        why = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"{what} {path} is not a readable tokenizer.json ({why})") from None


def check_dataset(location: str | Path, key: str, vocab_size: int) -> None:
    """The dataset opens, its tokenizer fits model.vocab_size and some train shard is intact
    (single bad shards are skipped and counted while training, as docs/data.md says)."""
    index, tokenizer = open_dataset(location, key)
    if tokenizer.vocab_size > vocab_size:
        raise ConfigError(
            f"model.vocab_size ({vocab_size}) is smaller than the tokenizer of {key} "
            f"'{location}' ({tokenizer.vocab_size} tokens): set model.vocab_size >= "
            f"{tokenizer.vocab_size}"
        )
    splits = index["splits"]
    if not isinstance(splits, dict) or "train" not in splits:
        found = ", ".join(sorted(splits)) if isinstance(splits, dict) else repr(splits)
        raise ConfigError(f"{key} '{location}': index.json has no train split (it has {found})")
    problems = [shard_problem(Path(location), shard) for shard in splits["train"]["shards"]]
    if problems and all(problems):
        raise ConfigError(
            f"{key} '{location}': no train shard is intact ({problems[0]}"
            f"{'' if len(problems) == 1 else f'; {len(problems) - 1} more'}); "
            "re-run `causeway data prepare`"
        )


def shard_problem(root: Path, shard: dict) -> str | None:
    """Why a shard of index.json is unreadable at a glance (missing, wrong size), or None."""
    name = shard.get("name") if isinstance(shard, dict) else None
    if not name:
        return f"a shard entry without a name: {shard!r}"
    path = root / name
    if not path.is_file():
        return f"{name} is missing"
    size, expected = path.stat().st_size, shard.get("bytes")
    if expected is not None and size != expected:
        return f"{name} is {size} bytes, index.json says {expected}"
    return None


def check_checkpoints(cfg: RunConfig, run_dir: Path | None, flags: dict) -> None:
    from causeway.checkpoint.discovery import newest_committed

    c = cfg.checkpoint
    if c.init_from:
        label = flags.get("checkpoint.init_from", "checkpoint.init_from")
        check_fits(open_checkpoint(c.init_from, label), label, cfg)
    if c.resume not in ("none", "auto"):
        label = flags.get("checkpoint.resume", "checkpoint.resume")
        check_fits(open_checkpoint(c.resume, label), label, cfg)
    elif c.resume == "auto" and run_dir is not None:
        newest = newest_committed(run_dir, warn=False)
        if newest is not None:  # damage is the trainer's to handle: it falls back
            check_fits(newest, "checkpoint.resume auto: the newest checkpoint", cfg, strict=False)


def open_checkpoint(path: str | Path, label: str) -> Path:
    """The committed checkpoint `path` means (a run dir: its newest), readable."""
    from causeway.convert.checkpoints import readable_checkpoint

    try:
        return readable_checkpoint(path)
    except ValueError as err:
        raise ConfigError(f"{label}: {err}") from None


def check_fits(source: Path, label: str, cfg: RunConfig, strict: bool = True) -> None:
    """The checkpoint holds a model of this config's shapes (compared by config.yaml)."""
    from causeway.convert.checkpoints import checkpoint_config

    if not (source / "config.yaml").is_file():
        return  # the tensors are compared when they are loaded
    try:
        stored = checkpoint_config(source).model
    except ConfigError:
        if strict:
            raise
        return
    here = cfg.model
    fields = (*SHAPE_FIELDS, "encoder_layers") if here.arch == "encoder_decoder" else SHAPE_FIELDS
    differ = [
        f"model.{KEY_OF.get(name, name)} {getattr(stored, name)} there, {getattr(here, name)} here"
        for name in fields
        if getattr(stored, name) != getattr(here, name)
    ]
    if differ:
        raise ConfigError(
            f"{label} {source} is another model ({'; '.join(differ[:4])}): use the recipe it "
            "was trained with, or another checkpoint"
        )
