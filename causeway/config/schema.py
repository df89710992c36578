"""Typed configuration: one dataclass per component under the root `RunConfig`.

Recipes (YAML) map onto these classes key by key; `causeway.config.loading` does the
mapping, type checks and error messages, `causeway.config.checks` refuses meaningless
combinations. Defaults describe a small CPU-friendly model so that a recipe only has to
say what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from causeway.data_pipeline.objectives.rules import MASK_PROB, MEAN_NOISE_SPAN_LENGTH, NOISE_DENSITY


@dataclass
class ModelConfig:
    arch: Literal["decoder", "encoder_decoder"] = "decoder"
    # None resolves to "causal" for decoders and "prefix" for encoder-decoders
    # (bidirectional encoder over the inputs, causal decoder over the targets).
    visibility: Literal["causal", "prefix", "bidirectional"] | None = None
    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    # Encoder-decoder only: encoder depth; 0 means "same as n_layers".
    n_encoder_layers: int = 0
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int = 1024
    mlp: Literal["swiglu", "geglu"] = "swiglu"
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    max_seq_len: int = 2048
    dropout: float = 0.0
    attention: Literal["auto", "sdpa", "flex", "flash"] = "auto"
    init_std: float = 0.02

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def encoder_layers(self) -> int:
        return self.n_encoder_layers or self.n_layers


@dataclass
class MixtureEntry:
    """One dataset of a mixture: a prepared directory (or URL) and its sampling weight."""

    path: str
    weight: float = 1.0
    name: str | None = None
    # Shard URL template with {name}, e.g. "pipe:cat /mnt/web/{name}".
    shards: str | None = None


@dataclass
class DataConfig:
    # "builtin": the standard-library docstring corpus, built on first use into `path`
    # (default: $CAUSEWAY_DATA_HOME/builtin or ~/.cache/causeway/builtin); "builtin_mtf":
    # prompted (inputs, targets) pairs made from it, for the mtf objective (default
    # .../builtin-mtf; data_pipeline/prepare/builtin_tasks.py).
    source: Literal["builtin", "builtin_mtf", "path"] = "builtin"
    path: str | None = None
    # Decoder row length in tokens.
    seq_len: int = 256
    # Encoder-decoder: encoder and decoder row lengths (targets derived when None).
    inputs_length: int | None = None
    targets_length: int | None = None
    # Global batch in packed sequences, and the rows each data-parallel rank runs per
    # forward/backward. Unset, it is each rank's share (batch_size / data-parallel size:
    # no accumulation), resolved with the layout; set it lower to accumulate gradients.
    batch_size: int = 16
    micro_batch_size: int | None = None
    num_workers: int = 0
    # A data worker that dies is restarted from its readers' state; after this many deaths
    # in a row without a batch in between the run fails, naming the shards it was reading.
    worker_restarts: int = 3
    seed: int = 0
    # Several datasets sampled by weight; when given, used instead of source/path.
    mixture: list[MixtureEntry] = field(default_factory=list)
    # Readers of the train stream: each gives batch_size / readers rows of every batch and the
    # data-parallel ranks split them, so the data order does not depend on the layout. Unset:
    # the largest divisor of batch_size up to 64. Must be a multiple of the data-parallel size.
    readers: int | None = None
    prefetch_factor: int = 2
    verify_sha256: bool = True


@dataclass
class ObjectiveConfig:
    name: Literal["full_lm", "prefix_lm", "span_corruption", "masked_lm", "mtf"] = "full_lm"
    noise_density: float = NOISE_DENSITY
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
    mask_prob: float = MASK_PROB


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adafactor"] = "adamw"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    # Adafactor's second-moment decay exponent (the paper's "decay 0.8").
    decay_rate: float = -0.8


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "linear", "inverse_sqrt", "constant"] = "cosine"
    warmup_steps: int = 100
    # Floor of cosine/linear decay as a fraction of the peak learning rate.
    min_lr_ratio: float = 0.1


@dataclass
class WandbConfig:
    """Weights & Biases mirror of the metrics (extra `wandb`); off while project is None."""

    project: str | None = None
    entity: str | None = None
    name: str | None = None
    mode: Literal["online", "offline", "disabled"] = "online"


@dataclass
class TrainConfig:
    steps: int = 1000
    grad_clip: float = 1.0
    z_loss: float = 0.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 4
    # Peak dense throughput of one device in TFLOP/s, for MFU; 0 means "unknown".
    peak_tflops: float = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: Literal["auto", "bar", "lines"] = "auto"
    # Signals that ask for a clean stop: all ranks agree on a step, save, and exit with
    # causeway.train.stop.EXIT_STOPPED. USR2 is Slurm's warning (NCCL may use USR1).
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR2"])
    # A step whose loss or gradient norm is NaN/inf is skipped on every rank (weights and
    # optimizer state untouched); this many skipped steps in a row stop the run. 0: no
    # check (and a single process then reads nothing back from the device per step).
    max_bad_steps: int = 5
    # Loss-spike guard, off at 0: skip a step whose loss is more than spike_z standard
    # deviations above the mean of the last spike_window applied steps.
    spike_window: int = 0
    spike_z: float = 6.0
    # Seconds a collective waits for its peers before the run fails (a hung or lost rank).
    collective_timeout_s: float = 600.0
    # [FIRST, LAST]: a torch profiler trace of those steps (and a CUDA memory snapshot on
    # GPUs) in RUN_DIR/profile/ (train/profiling.py); empty: off.
    profile_steps: list[int] = field(default_factory=list)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointConfig:
    # Save every N steps (0: only at the end) and keep the newest K.
    every: int = 0
    keep: int = 2
    resume: str = "none"
    async_save: bool = False
    # A save that fails (a full disk): "stop" the run naming the newest committed
    # checkpoint, or "continue" training and try again at the next save.
    on_save_error: Literal["stop", "continue"] = "stop"
    # Start from these weights (a committed checkpoint directory), fresh optimizer.
    init_from: str | None = None
    # Check every file's checksum against the commit record before resuming (or starting
    # from init_from), not only its size: reads the whole checkpoint, split over the ranks.
    verify: bool = False


@dataclass
class ParallelConfig:
    dp_replicate: int = 1
    # -1: whatever remains of the world size after the other dimensions.
    dp_shard: int = -1
    tp: int = 1
    pp: int = 1
    pp_schedule: Literal["gpipe", "1f1b", "interleaved_1f1b"] = "1f1b"
    virtual_stages: int = 1
    activation_checkpoint: Literal["none", "full", "every_k"] = "none"
    activation_checkpoint_every: int = 2
    compile: bool = False


@dataclass
class LaunchConfig:
    """How the run was started; `causeway launch` fills it in (the CLI flags win)."""

    launcher: Literal["direct", "local", "slurm", "ray"] = "direct"
    nodes: int = 1
    gpus_per_node: int = 0
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str | None = None
    ray_address: str | None = None


@dataclass
class RunConfig:
    name: str = "run"
    run_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
