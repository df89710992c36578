"""Typed run configuration: dataclasses, YAML recipes, overrides and checks."""

from causeway.config.loading import ConfigError, dump_yaml, find_recipe, load_config, save_config
from causeway.config.schema import (
    CheckpointConfig,
    DataConfig,
    LaunchConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimizerConfig,
    ParallelConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "LaunchConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "dump_yaml",
    "find_recipe",
    "load_config",
    "save_config",
]
