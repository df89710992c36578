"""A committed checkpoint ready to read text: its model in eval mode on one device, its
run config, and the tokenizer of the dataset it was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from causeway.config import ConfigError, RunConfig
from causeway.data_pipeline.tokenizer import Tokenizer


@dataclass
class InferenceModel:
    model: nn.Module
    cfg: RunConfig
    tokenizer: Tokenizer
    checkpoint: Path

    @property
    def arch(self) -> str:
        return self.cfg.model.arch

    @property
    def visibility(self) -> str:
        return self.model.visibility if self.arch == "decoder" else "prefix"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible")
    return torch.device(name)


def load_inference_model(checkpoint: str | Path, device: str = "auto") -> InferenceModel:
    """Refuses a checkpoint that is not committed, and one whose dataset's tokenizer is
    larger than its vocabulary, each in one line."""
    from causeway.convert.checkpoints import (
        checkpoint_config,
        load_checkpoint_model,
        readable_checkpoint,
    )
    from causeway.train.data import resolve_sources

    source = readable_checkpoint(checkpoint)
    cfg = checkpoint_config(source)
    model = load_checkpoint_model(source).to(pick_device(device)).eval()
    data_dir = Path(resolve_sources(cfg)[0].path)
    tokenizer = Tokenizer.from_dataset(data_dir)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"{source}: the tokenizer of {data_dir} has {tokenizer.vocab_size} tokens, the "
            f"model model.vocab_size={cfg.model.vocab_size}"
        )
    return InferenceModel(model, cfg, tokenizer, source)
