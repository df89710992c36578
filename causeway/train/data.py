"""From the data section of a run config to train and validation batch streams."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from causeway.config import ConfigError, RunConfig
from causeway.data_pipeline.loader import batch_iterator, load_tokenizer
from causeway.data_pipeline.prepare import ensure_builtin
from causeway.data_pipeline.tokenizer import Tokenizer

OBJECTIVE_PARAMS = {
    "span_corruption": ("noise_density", "mean_noise_span_length"),
    "masked_lm": ("mask_prob",),
}


def builtin_data_dir() -> Path:
    home = os.environ.get("CAUSEWAY_DATA_HOME") or Path.home() / ".cache" / "causeway"
    return Path(home) / "builtin"


def resolve_data_dir(cfg: RunConfig) -> Path:
    """The prepared dataset directory; the builtin corpus is built on first use."""
    if cfg.data.source == "builtin":
        path = Path(cfg.data.path) if cfg.data.path else builtin_data_dir()
        if not (path / "index.json").is_file():
            print(f"causeway: building the builtin corpus in {path} (first use)", flush=True)
        return ensure_builtin(path)
    path = Path(cfg.data.path)
    if not (path / "index.json").is_file():
        raise ConfigError(f"data.path '{path}' has no index.json: run `causeway data prepare`")
    return path


@dataclass
class TrainData:
    data_dir: Path
    tokenizer: Tokenizer
    train: Iterator[dict]
    validation: Callable[[int], list[dict]]


def build_data(cfg: RunConfig) -> TrainData:
    data_dir = resolve_data_dir(cfg)
    tokenizer = load_tokenizer(data_dir)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the tokenizer of "
            f"{data_dir} ({tokenizer.vocab_size} tokens)"
        )
    o = cfg.objective
    params = {name: getattr(o, name) for name in OBJECTIVE_PARAMS.get(o.name, ())}

    def stream(split: str) -> Iterator[dict]:
        d = cfg.data
        return batch_iterator(
            data_dir, split, o.name, cfg.model.arch, tokenizer, d.seq_len, d.batch_size,
            d.seed, loop=True, inputs_length=d.inputs_length, targets_length=d.targets_length,
            objective_params=params,
        )  # fmt: skip

    def validation(n_batches: int) -> list[dict]:
        # A fresh stream each time: every evaluation scores the same held-out batches.
        return list(itertools.islice(stream("val"), n_batches))

    return TrainData(data_dir, tokenizer, stream("train"), validation)
