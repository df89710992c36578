"""From the data section of a run config to train and validation batch streams.

The train stream is a `DataStream` (deterministic, resumable, read by share): each
data-parallel rank runs its own readers and gets only its rows of every global batch
(tensor- and pipeline-parallel peers of a rank get the same rows). The trainer calls
`next(data.train)` each step, saves `data.stream.global_state_dict(dp_group)` (every rank's
readers, identical on all ranks) with its checkpoint, restores it with `load_state_dict`
under any layout, and logs `data.stream.metrics()`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from causeway.config import ConfigError, RunConfig
from causeway.data_pipeline.objectives.rules import params_of
from causeway.data_pipeline.prepare.prepare import ensure_builtin
from causeway.data_pipeline.shards.sources import Source, as_sources, load_source
from causeway.data_pipeline.stream import DataStream, default_readers
from causeway.data_pipeline.stream.stream import fit_readers
from causeway.data_pipeline.tokenizer import Tokenizer

BUILTIN_DIRS = {"builtin": "builtin", "builtin_mtf": "builtin-mtf"}


def builtin_data_dir(source: str = "builtin") -> Path:
    home = os.environ.get("CAUSEWAY_DATA_HOME") or Path.home() / ".cache" / "causeway"
    return Path(home) / BUILTIN_DIRS[source]


def resolve_data_dir(cfg: RunConfig) -> Path:
    """The prepared dataset directory; the builtin datasets are built on first use."""
    source = cfg.data.source
    if source in BUILTIN_DIRS:
        path = Path(cfg.data.path) if cfg.data.path else builtin_data_dir(source)
        if not (path / "index.json").is_file():
            print(f"causeway: building the {source} dataset in {path} (first use)", flush=True)
        if source == "builtin_mtf":
            from causeway.data_pipeline.prepare.builtin_tasks import ensure_builtin_mtf

            return ensure_builtin_mtf(path, builtin_data_dir())
        return ensure_builtin(path)
    path = Path(cfg.data.path)
    if not (path / "index.json").is_file():
        raise ConfigError(f"data.path '{path}' has no index.json: run `causeway data prepare`")
    return path


def resolve_sources(cfg: RunConfig) -> list[Source]:
    """data.mixture ([{path, weight, name?, shards?}, ...]) if given, else the one dataset."""
    if not cfg.data.mixture:
        return [Source(str(resolve_data_dir(cfg)))]
    return as_sources(cfg.data.mixture)


class HeldOutBatches:
    """`validation(n)`: the first n batches of the val split, the same ones at every call."""

    def __init__(self, make_stream: Callable[[], DataStream]) -> None:
        self._make_stream = make_stream
        self._stream: DataStream | None = None
        self._start: dict | None = None

    def __call__(self, n_batches: int) -> list[dict]:
        if self._stream is None:  # built on first use: a run without evaluation never reads val
            self._stream = self._make_stream()
            self._start = self._stream.state_dict()
        self._stream.load_state_dict(self._start)
        return list(itertools.islice(self._stream, n_batches))


@dataclass
class TrainData:
    data_dir: Path
    tokenizer: Tokenizer
    train: DataStream
    validation: Callable[[int], list[dict]]

    @property
    def stream(self) -> DataStream:
        """The train stream: state_dict / load_state_dict / global_state_dict / metrics."""
        return self.train


def validation_stream(
    sources: list[Source], d, world_size: int, common: dict, loop: bool = True
) -> DataStream:
    """The val split's stream: as many readers as the train stream unless the split is smaller
    (the builtin corpus holds 56 validation documents)."""
    wanted = d.readers or default_readers(d.batch_size)
    documents = min(load_source(source, "val").documents for source in sources)
    readers = fit_readers(wanted, documents, d.batch_size, world_size)
    return DataStream(sources, "val", num_workers=0, loop=loop, **(common | {"readers": readers}))


def stream_settings(cfg: RunConfig, tokenizer: Tokenizer, rank: int, world_size: int) -> dict:
    """The `DataStream` arguments that the train and validation streams share."""
    o, d = cfg.objective, cfg.data
    return dict(
        objective=o.name, arch=cfg.model.arch, seq_len=d.seq_len, batch_size=d.batch_size,
        tokenizer=tokenizer, seed=d.seed, rank=rank, world_size=world_size, readers=d.readers,
        inputs_length=d.inputs_length, targets_length=d.targets_length,
        objective_params=params_of(o.name, o), verify_sha256=d.verify_sha256,
    )  # fmt: skip


def build_data(cfg: RunConfig, rank: int = 0, world_size: int = 1) -> TrainData:
    """Streams for data-parallel rank `rank` of `world_size` (1 when not data-parallel)."""
    sources = resolve_sources(cfg)
    data_dir = Path(sources[0].path)
    tokenizer = Tokenizer.from_dataset(data_dir)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the tokenizer of "
            f"{data_dir} ({tokenizer.vocab_size} tokens)"
        )
    d = cfg.data
    common = stream_settings(cfg, tokenizer, rank, world_size)
    train = DataStream(
        sources, "train", num_workers=d.num_workers, prefetch_factor=d.prefetch_factor,
        worker_restarts=d.worker_restarts,
        **common,
    )  # fmt: skip
    validation = HeldOutBatches(lambda: validation_stream(sources, d, world_size, common))
    return TrainData(data_dir, tokenizer, train, validation)
