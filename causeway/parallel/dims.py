"""The parallel layout of a run: sizes, their checks, and the device mesh."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

from causeway.config import ConfigError, RunConfig

if TYPE_CHECKING:  # the launchers check a layout without importing torch
    from torch.distributed.device_mesh import DeviceMesh

MESH_ORDER = ("pp", "dp_replicate", "dp_shard", "tp")


class LayoutMeshes(NamedTuple):
    """The run's 4-D mesh and its data-parallel dimensions flattened into one. The flat mesh
    is kept as `_flatten` returns it: torch deprecates slicing a flattened dim from the root."""

    root: DeviceMesh
    dp: DeviceMesh


@dataclass
class ParallelDims:
    dp_replicate: int
    dp_shard: int
    tp: int
    pp: int
    world_size: int
    virtual_stages: int = 1

    @classmethod
    def from_config(cls, cfg: RunConfig, world_size: int) -> ParallelDims:
        """Resolve dp_shard=-1 and check every size against the model and the batch."""
        p = cfg.parallel
        for name in ("dp_replicate", "tp", "pp", "virtual_stages"):
            if getattr(p, name) < 1:
                raise ConfigError(f"parallel.{name} must be >= 1, got {getattr(p, name)}")
        others = p.dp_replicate * p.tp * p.pp
        dp_shard = p.dp_shard
        if dp_shard == -1:
            if world_size % others:
                raise ConfigError(
                    f"world size {world_size} is not divisible by dp_replicate x tp x pp "
                    f"= {others}, so dp_shard cannot fill it"
                )
            dp_shard = world_size // others
        dims = cls(p.dp_replicate, dp_shard, p.tp, p.pp, world_size, p.virtual_stages)
        dims.check(cfg)
        return dims

    def check(self, cfg: RunConfig) -> None:
        product = self.dp_replicate * self.dp_shard * self.tp * self.pp
        if product != self.world_size:
            raise ConfigError(
                f"dp_replicate {self.dp_replicate} x dp_shard {self.dp_shard} x tp {self.tp} "
                f"x pp {self.pp} = {product}, but the world size is {self.world_size}"
            )
        m, d = cfg.model, cfg.data
        for name, value in (("n_heads", m.n_heads), ("n_kv_heads", m.kv_heads)):
            if value % self.tp:
                raise ConfigError(
                    f"model.{name} ({value}) is not divisible by parallel.tp {self.tp}"
                )
        if m.vocab_size % self.tp:
            raise ConfigError(f"model.vocab_size ({m.vocab_size}) is not divisible by tp {self.tp}")
        if self.pp == 1 and self.virtual_stages > 1:
            raise ConfigError(
                f"parallel.virtual_stages {self.virtual_stages} needs a pipeline: with "
                "parallel.pp 1 there are no stages to interleave"
            )
        stages = self.pp * self.virtual_stages
        if self.pp > 1 and m.n_layers % stages:
            raise ConfigError(
                f"model.n_layers ({m.n_layers}) is not divisible by pp x virtual_stages = {stages}"
            )
        if d.micro_batch_size is None:  # unset: each rank's whole share, no accumulation
            if d.batch_size % self.dp:
                raise ConfigError(
                    f"data.batch_size ({d.batch_size}) is not divisible by data-parallel "
                    f"size {self.dp}"
                )
            d.micro_batch_size = d.batch_size // self.dp
        per_step = self.dp * d.micro_batch_size
        if d.batch_size % per_step:
            raise ConfigError(
                f"data.batch_size ({d.batch_size}) is not divisible by data-parallel size "
                f"{self.dp} x data.micro_batch_size {d.micro_batch_size}"
            )
        self.check_readers(d.readers, d.batch_size)
        if self.pp > 1 and m.arch == "encoder_decoder":
            raise ConfigError(
                "pipeline parallelism is not supported for arch encoder_decoder "
                "(use tp and dp_shard for it)"
            )

    def check_readers(self, readers: int | None, batch_size: int) -> None:
        """Each data-parallel rank runs whole readers of the stream (see DataStream)."""
        from causeway.data_pipeline.stream.stream import check_readers, default_readers

        try:
            check_readers(readers or default_readers(batch_size), batch_size, self.dp)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def padded_length(self, length: int) -> int:
        """Sequence parallelism splits rows into tp equal parts: round up to a multiple."""
        return -(-length // self.tp) * self.tp

    @property
    def dp(self) -> int:
        return self.dp_replicate * self.dp_shard

    @property
    def sizes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in MESH_ORDER}

    def build_mesh(self, device_type: str) -> LayoutMeshes:
        """A 4-D mesh (pp, dp_replicate, dp_shard, tp), and the flattened 'dp' mesh."""
        from torch.distributed.device_mesh import init_device_mesh

        shape = tuple(self.sizes.values())
        root = init_device_mesh(device_type, shape, mesh_dim_names=MESH_ORDER)
        return LayoutMeshes(root, root["dp_replicate", "dp_shard"]._flatten("dp"))

    @cached_property
    def parallel(self) -> bool:
        return self.world_size > 1
