"""Build a model for a layout: meta -> pipeline split -> TP -> AC -> compile -> FSDP ->
materialise and initialise. One process gets the plain model through the same path."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from causeway.config import RunConfig
from causeway.models import build_model
from causeway.parallel.activation_checkpoint import apply_activation_checkpointing
from causeway.parallel.compile import apply_compile
from causeway.parallel.dims import LayoutMeshes, ParallelDims
from causeway.parallel.fsdp import apply_fsdp, mixed_precision
from causeway.parallel.pipeline import (
    PipelineLoss,
    build_pipeline,
    make_schedule,
    stack_head_output,
    sync_tied_embedding,
    tied_embedding_group,
)
from causeway.parallel.tensor_parallel import apply_tensor_parallel


@dataclass
class ParallelModel:
    """The model parts this rank holds, and how to run them."""

    parts: list[nn.Module]
    dims: ParallelDims
    mesh: DeviceMesh | None = None  # the 4-D root mesh
    dp_mesh: DeviceMesh | None = None  # its data-parallel dims flattened
    stage_ids: list[int] = field(default_factory=lambda: [0])
    n_stages: int = 1
    schedule: object | None = None
    pipeline_loss: PipelineLoss | None = None
    tied_group: dist.ProcessGroup | None = None

    @property
    def has_last_stage(self) -> bool:
        return self.n_stages - 1 in self.stage_ids

    @property
    def has_first_stage(self) -> bool:
        return 0 in self.stage_ids

    def parameters(self):
        seen = set()
        for part in self.parts:
            for p in part.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def group(self, dim: str) -> dist.ProcessGroup | None:
        """The process group of mesh dimension `dim` ('dp' included); None if size 1."""
        size = self.dims.dp if dim == "dp" else self.dims.sizes[dim]
        return None if self.mesh is None or size == 1 else self._mesh_of(dim).get_group()

    def local_rank(self, dim: str) -> int:
        return 0 if self.mesh is None else self._mesh_of(dim).get_local_rank()

    def _mesh_of(self, dim: str) -> DeviceMesh:
        return self.dp_mesh if dim == "dp" else self.mesh[dim]


def apply_layout(part: nn.Module, cfg: RunConfig, dims: ParallelDims, mesh, device) -> None:
    p = cfg.parallel
    if dims.tp > 1:
        apply_tensor_parallel(part, mesh["tp"])
    apply_activation_checkpointing(part, p.activation_checkpoint, p.activation_checkpoint_every)
    if p.compile:
        apply_compile(part)
    if dims.dp > 1:
        dp_mesh = mesh["dp_replicate", "dp_shard"] if dims.dp_replicate > 1 else mesh["dp_shard"]
        apply_fsdp(part, dp_mesh, mixed_precision(cfg.train.precision, device.type))


def parallelize(
    cfg: RunConfig, dims: ParallelDims, meshes: LayoutMeshes | None, device: torch.device
) -> ParallelModel:
    """Parts of the model that this rank holds, materialised on `device` and initialised."""
    model = build_model(cfg.model, "meta")
    mesh, dp_mesh = meshes if meshes is not None else (None, None)
    pm = ParallelModel([model], dims, mesh, dp_mesh)
    if dims.pp > 1:
        p = cfg.parallel
        pm.parts, pm.stage_ids, pm.n_stages = build_pipeline(
            model, mesh["pp"], p.virtual_stages, p.pp_schedule
        )
    for part in pm.parts:
        apply_layout(part, cfg, dims, mesh, device)
        part.to_empty(device=device)
        part.init_weights(cfg.train.seed)  # the same weights under every layout
    if dims.pp > 1:
        finish_pipeline(pm, cfg, device)
    return pm


def finish_pipeline(pm: ParallelModel, cfg: RunConfig, device: torch.device) -> None:
    d, p = cfg.data, cfg.parallel
    for part, stage in zip(pm.parts, pm.stage_ids, strict=True):
        if stage == pm.n_stages - 1:
            stack_head_output(part)
    n_micro = d.batch_size // pm.dims.dp // d.micro_batch_size
    pm.pipeline_loss = PipelineLoss(n_micro)
    pm.schedule = make_schedule(
        pm.parts, pm.stage_ids, pm.n_stages, pm.mesh["pp"], p.pp_schedule, n_micro, device,
        pm.pipeline_loss,
    )  # fmt: skip
    if cfg.model.tie_embeddings:
        pm.tied_group = tied_embedding_group(pm.mesh)
        first = first_stage_rank(pm.mesh)
        sync_tied_embedding(pm.parts, pm.tied_group, first)


def first_stage_rank(mesh: DeviceMesh) -> int:
    """Global rank of pipeline stage 0 in this rank's (dp, tp) coordinate."""
    return int(mesh["pp"].mesh[0])
