"""Refuse meaningless combinations and fill in values derived from others.

The rule behind the visibility/objective table: a position that is trained to predict a
token must never see that token. Causal visibility is always safe; prefix visibility is
safe when the loss is on targets only (the prefix is input); bidirectional visibility is
safe only for in-place masked prediction, where the target is not in the input.
"""

from __future__ import annotations

import copy
import signal

from causeway.config.loading import ConfigError
from causeway.config.schema import RunConfig
from causeway.data_pipeline.objectives.rules import (
    ENCODER_DECODER_OBJECTIVES,
    PARAM_DEFAULTS,
    check_params,
    objective_shape,
    params_of,
)

DECODER_VISIBILITIES = {
    "full_lm": {"causal"},
    "prefix_lm": {"causal", "prefix"},
    "span_corruption": {"causal", "prefix"},
    "mtf": {"causal", "prefix"},
    "masked_lm": {"bidirectional"},
}

WHY = {
    ("full_lm", "prefix"): "full_lm has no input prefix, so prefix visibility means nothing",
    ("full_lm", "bidirectional"): "every position would see the token it must predict",
    ("prefix_lm", "bidirectional"): "target positions would see their own future",
    ("span_corruption", "bidirectional"): "target positions would see their own future",
    ("mtf", "bidirectional"): "target positions would see their own future",
    ("masked_lm", "causal"): "masked_lm predicts in place and needs bidirectional visibility",
    ("masked_lm", "prefix"): "masked_lm predicts in place and needs bidirectional visibility",
}

UNCATCHABLE = ("SIGKILL", "SIGSTOP")


def check_config(config: RunConfig) -> RunConfig:
    """Return a resolved copy of `config`, or raise `ConfigError` naming the reason."""
    config = copy.deepcopy(config)
    check_model(config)
    check_objective(config)
    check_data(config)
    check_training(config)
    check_checkpoint_and_stop(config)
    return config


def check_checkpoint_and_stop(config: RunConfig) -> None:
    c = config.checkpoint
    if c.every < 0 or c.keep < 0:
        raise ConfigError("checkpoint.every and checkpoint.keep must be >= 0")
    for name in config.train.stop_signals:
        if not (name.startswith("SIG") and hasattr(signal, name)) or name in UNCATCHABLE:
            raise ConfigError(f"train.stop_signals: '{name}' is not a catchable signal name")


def check_model(config: RunConfig) -> None:
    m = config.model
    if m.visibility is None:
        m.visibility = "prefix" if m.arch == "encoder_decoder" else "causal"
    positive = ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len")
    for name in positive:
        if getattr(m, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(m, name)}")
    if m.head_dim is None and m.d_model % m.n_heads:
        raise ConfigError(
            f"model.d_model ({m.d_model}) is not divisible by model.n_heads ({m.n_heads}); "
            "set model.head_dim explicitly"
        )
    if m.n_heads % m.kv_heads:
        raise ConfigError(
            f"model.n_heads ({m.n_heads}) must be a multiple of model.n_kv_heads ({m.kv_heads})"
        )
    if m.dim_per_head % 2:
        raise ConfigError(f"head dimension {m.dim_per_head} must be even for RoPE")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")


def check_objective(config: RunConfig) -> None:
    m, name, o = config.model, config.objective.name, config.objective
    if name not in DECODER_VISIBILITIES:
        known = ", ".join(DECODER_VISIBILITIES)
        raise ConfigError(f"objective.name '{name}' is not one of {known}")
    try:
        check_params({param: getattr(o, param) for param in PARAM_DEFAULTS})
    except ValueError as e:
        raise ConfigError(f"objective.{e}") from None
    if m.arch == "encoder_decoder":
        if name not in ENCODER_DECODER_OBJECTIVES:
            allowed = ", ".join(sorted(ENCODER_DECODER_OBJECTIVES))
            raise ConfigError(
                f"objective.name '{name}' is not valid for arch encoder_decoder "
                f"(allowed: {allowed})"
            )
        if m.visibility != "prefix":
            raise ConfigError(
                f"model.visibility '{m.visibility}' is not valid for arch encoder_decoder: "
                "its encoder is bidirectional and its decoder causal, which is 'prefix'"
            )
        return
    if m.visibility not in DECODER_VISIBILITIES[name]:
        raise ConfigError(
            f"objective.name '{name}' with model.visibility '{m.visibility}' is refused: "
            f"{WHY[(name, m.visibility)]}"
        )


def check_data(config: RunConfig) -> None:
    d, m = config.data, config.model
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers ({d.num_workers}) must be >= 0")
    if d.worker_restarts < 0:
        raise ConfigError(f"data.worker_restarts ({d.worker_restarts}) must be >= 0")
    if d.readers is not None and (d.readers < 1 or d.batch_size % d.readers):
        raise ConfigError(
            f"data.readers ({d.readers}) must divide data.batch_size ({d.batch_size}), so "
            "that every reader gives the same number of rows"
        )
    if d.source == "path" and not d.path and not d.mixture:
        raise ConfigError("data.source 'path' needs data.path (a prepared dataset directory)")
    if config.objective.name == "mtf" and d.source == "builtin" and not d.mixture:
        raise ConfigError(
            "objective mtf needs a dataset of (inputs, targets) pairs: prepare one with "
            "`causeway data prepare --input ... --pair-fields inputs targets` and set data.path, "
            "or use data.source=builtin_mtf (prompted tasks made from the builtin corpus)"
        )
    if d.source == "builtin_mtf" and config.objective.name != "mtf" and not d.mixture:
        raise ConfigError(
            f"data.source builtin_mtf holds (inputs, targets) pairs for objective mtf, not "
            f"{config.objective.name!r}"
        )
    if m.arch == "encoder_decoder":
        resolve_encoder_decoder_lengths(config)
        longest = max(d.inputs_length, d.targets_length)
    else:
        longest = d.seq_len
    if longest > m.max_seq_len:
        raise ConfigError(f"sequence length {longest} exceeds model.max_seq_len {m.max_seq_len}")
    if d.batch_size <= 0:
        raise ConfigError(f"data.batch_size must be positive, got {d.batch_size}")
    if d.micro_batch_size is None:
        return  # each data-parallel rank's share, once the layout is known (ParallelDims)
    if d.micro_batch_size <= 0 or d.batch_size % d.micro_batch_size:
        raise ConfigError(
            f"data.batch_size ({d.batch_size}) must be a positive multiple of "
            f"data.micro_batch_size ({d.micro_batch_size})"
        )


def resolve_encoder_decoder_lengths(config: RunConfig) -> None:
    """data.inputs_length (default seq_len) and targets_length (default: T5's rule for
    span corruption, else inputs_length), by the objective's own length rules."""
    d, o = config.data, config.objective
    try:
        shape = objective_shape(
            o.name, "encoder_decoder", d.seq_len, d.inputs_length, d.targets_length,
            params_of(o.name, o),
        )  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None
    d.inputs_length, d.targets_length = shape.inputs_length, shape.targets_length


def check_training(config: RunConfig) -> None:
    t, s = config.train, config.schedule
    if t.steps <= 0:
        raise ConfigError(f"train.steps must be positive, got {t.steps}")
    if s.warmup_steps < 0:
        raise ConfigError(f"schedule.warmup_steps must be >= 0, got {s.warmup_steps}")
    if t.log_every <= 0:
        raise ConfigError(f"train.log_every must be positive, got {t.log_every}")
    if config.optimizer.lr <= 0:
        raise ConfigError(f"optimizer.lr must be positive, got {config.optimizer.lr}")
    if len(config.optimizer.betas) != 2:
        raise ConfigError(f"optimizer.betas needs two values, got {config.optimizer.betas}")
    check_fault_limits(t)
    check_profile_steps(t.profile_steps)


def check_profile_steps(steps: list[int]) -> None:
    if not steps:
        return
    if len(steps) != 2 or not all(isinstance(s, int) and s >= 1 for s in steps):
        raise ConfigError(f"train.profile_steps must be [FIRST, LAST], two steps >= 1, got {steps}")
    if steps[0] > steps[1]:
        raise ConfigError(f"train.profile_steps {steps}: the first step is after the last")


def check_fault_limits(t) -> None:
    """The step guard's and the collectives' limits (train/guard.py, train/failures.py)."""
    for name in ("max_bad_steps", "spike_window"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0 (0: off), got {getattr(t, name)}")
    if t.spike_window == 1:
        raise ConfigError("train.spike_window=1 has no spread to measure: use 0 (off) or >= 2")
    if not t.spike_z > 0:
        raise ConfigError(f"train.spike_z must be positive, got {t.spike_z}")
    if not t.collective_timeout_s > 0:
        raise ConfigError(
            f"train.collective_timeout_s must be positive seconds, got {t.collective_timeout_s}"
        )
