"""Parallelism applied to plain models after they are built (see docs/architecture.md).

Order: pipeline split -> tensor/sequence parallel -> activation checkpointing ->
compile -> FSDP2, then materialise. `ParallelDims` carries the mesh; nothing here keeps
process groups in module-level state.
"""
