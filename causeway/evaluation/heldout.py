"""`causeway eval loss`: a checkpoint's mean loss per loss token and its perplexity over one
pass of a dataset's held-out (val) split, with the checkpoint's own objective."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

from causeway.config import ConfigError
from causeway.config.schema import ParallelConfig


def heldout_loss(
    checkpoint: str | Path, data_dir: str | Path | None = None, device: str = "auto",
    max_batches: int | None = None, model=None,
) -> dict:  # fmt: skip
    """`model`: the checkpoint's model when the caller has it loaded already (on `device`)."""
    from causeway.convert.checkpoints import (
        checkpoint_config,
        load_checkpoint_model,
        readable_checkpoint,
    )
    from causeway.data_pipeline.shards.sources import read_index_at
    from causeway.data_pipeline.tokenizer import Tokenizer
    from causeway.inference.loading import pick_device
    from causeway.parallel.apply import ParallelModel
    from causeway.parallel.dims import ParallelDims
    from causeway.train.data import resolve_sources, stream_settings, validation_stream
    from causeway.train.step import StepSettings, evaluate

    source = readable_checkpoint(checkpoint)
    cfg = checkpoint_config(source)
    cfg.parallel = ParallelConfig()  # one process, whatever the layout it was trained with
    if data_dir is not None:
        cfg.data = dataclasses.replace(cfg.data, source="path", path=str(data_dir), mixture=[])
    sources = resolve_sources(cfg)
    where = sources[0].path
    if "val" not in read_index_at(where)["splits"]:
        raise ConfigError(f"{where} has no val split: prepare it with --val-fraction or "
                          "--val-files")  # fmt: skip
    tokenizer = Tokenizer.from_dataset(Path(where))
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"the tokenizer of {where} has {tokenizer.vocab_size} tokens; "
                          f"{source} has model.vocab_size={cfg.model.vocab_size}")  # fmt: skip
    on = pick_device(device)
    model = load_checkpoint_model(source).to(on) if model is None else model
    stream = validation_stream(sources, cfg.data, 1, stream_settings(cfg, tokenizer, 0, 1), False)
    pm = ParallelModel([model], ParallelDims.from_config(cfg, 1))
    settings = StepSettings.from_config(cfg, on)
    if on.type == "cpu":
        settings = dataclasses.replace(settings, precision="fp32")
    figures = evaluate(pm, itertools.islice(stream, max_batches), settings)
    return {
        "checkpoint": str(source), "data": str(where), "objective": cfg.objective.name,
        "val_loss": figures["val_loss"], "perplexity": math.exp(figures["val_loss"]),
        "val_tokens": figures["val_tokens"],
    }  # fmt: skip
