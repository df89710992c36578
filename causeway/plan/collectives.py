"""The collectives one training step issues on global rank 0, counted from the layout's
structure: what `step_time.py` times, and what `tests/parallel/test_collectives.py` checks
against a real gloo run (counts and bytes, for dp_shard 2 with 2 micro-batches, tp 2 and
pp 2 on a decoder).

Bytes are the unsharded size of what a gather produces or a reduce-scatter consumes, and
the size of an all-reduced or sent tensor.

- Scalars: the loss-token normaliser (all-reduce over dp), the [ce, z] sums (over dp,
  then over pp) and the gradient norm (one all-reduce for the whole job, plus one for
  the norm gains' partial gradients under tp); 4 + 8 + 8 bytes.
- FSDP (dp_shard > 1, no pipeline; `train/step.py`): per block, an all-gather in the
  first micro-batch's forward and one in every backward (parameters stay gathered from
  one backward to the next forward): n + 1; the last block (kept gathered after
  forward) and the root (embedding, norms, head) once; one reduce-scatter per unit per
  step (the sync is deferred to the last micro-batch). Parameters gather in the compute
  dtype, gradients reduce in fp32; each parameter's first dimension is padded to a
  multiple of dp_shard.
- Tensor parallel with sequence parallelism: per block and micro-batch an all-gather
  and a reduce-scatter around attention and around the MLP, mirrored in backward, and
  once more in backward for a recomputed block; the embedding's output (reduce-scatter)
  and the head's input (all-gather), mirrored; the vocabulary-parallel loss all-reduces
  each position's max, sum of exponentials and target logit (fp32).
- Pipeline (1F1B / GPipe, or interleaved with v virtual stages): rank 0 sends each
  micro-batch's activations forward from each of its v stages and receives their
  gradients, (2v - 1) of each per micro-batch; a tied embedding's gradient is
  all-reduced between the first and last stage.
"""

from __future__ import annotations

import math

from causeway.config import RunConfig
from causeway.models import build_model
from causeway.parallel.dims import ParallelDims
from causeway.plan.memory import FP32, act_bytes, checkpointed_blocks, micro_batches

KINDS = ("all_gather", "reduce_scatter", "all_reduce", "send", "recv")


class Tally(dict):
    def add(self, kind: str, count: int, nbytes: float) -> None:
        if count:
            entry = self.setdefault(kind, {"count": 0, "bytes": 0})
            entry["count"] += int(count)
            entry["bytes"] += int(count * nbytes)


def padded_numel(shape: tuple[int, ...], shards: int) -> int:
    """FSDP2 pads dim 0 to a multiple of the shard count."""
    if not shape:
        return shards
    rows = math.ceil(shape[0] / shards) * shards
    return rows * math.prod(shape[1:])


def fsdp_units(cfg: RunConfig, shards: int) -> tuple[list[int], int]:
    """Unsharded (padded) elements of each block, in order, and of the root."""
    model = build_model(cfg.model, "meta")
    blocks, in_blocks = [], set()
    for stack in ("encoder_layers", "layers"):
        for block in (getattr(model, stack, None) or {}).values():
            params = list(block.parameters())
            in_blocks.update(id(p) for p in params)
            blocks.append(sum(padded_numel(tuple(p.shape), shards) for p in params))
    root = sum(
        padded_numel(tuple(p.shape), shards) for p in model.parameters() if id(p) not in in_blocks
    )
    return blocks, root


def add_fsdp(tally: Tally, cfg: RunConfig, dims: ParallelDims, n_micro: int) -> None:
    blocks, root = fsdp_units(cfg, dims.dp_shard)
    gathered = act_bytes(cfg)
    for index, numel in enumerate(blocks):
        last = index == len(blocks) - 1
        tally.add("all_gather", 1 if last else n_micro + 1, numel * gathered)
    tally.add("all_gather", 1, root * gathered)
    for numel in [*blocks, root]:
        tally.add("reduce_scatter", 1, numel * FP32)


def add_tensor_parallel(tally: Tally, cfg: RunConfig, dims: ParallelDims, n_micro: int) -> None:
    m, p = cfg.model, cfg.parallel
    layers = m.n_layers // dims.pp
    recomputed = checkpointed_blocks(layers, p.activation_checkpoint, p.activation_checkpoint_every)
    seq = cfg.data.seq_len
    hidden = cfg.data.micro_batch_size * seq * m.d_model * act_bytes(cfg)
    # Per micro-batch: 2 gathers + 2 scatters a block forward, mirrored backward, and a
    # recomputed block's forward again; the embedding and head ends on their stages.
    per_micro = 4 * layers + 2 * recomputed
    ends = 2 if dims.pp == 1 else 1  # rank 0 holds both ends, or the embedding's only
    tally.add("all_gather", n_micro * (per_micro + ends), hidden)
    tally.add("reduce_scatter", n_micro * (per_micro + ends), hidden)
    if dims.pp == 1:  # the loss lives on the last stage
        position = cfg.data.micro_batch_size * seq * FP32
        tally.add("all_reduce", 3 * n_micro, position)
    norms = (2 * layers + (1 if dims.pp == 1 else 0)) * m.d_model * FP32
    tally.add("all_reduce", 1, norms)  # the norm gains' partial gradients, summed at once


def add_pipeline(tally: Tally, cfg: RunConfig, dims: ParallelDims, n_micro: int) -> None:
    m = cfg.model
    message = cfg.data.micro_batch_size * cfg.data.seq_len * m.d_model * act_bytes(cfg)
    message //= dims.tp  # sequence-parallel shards travel
    sends = (2 * dims.virtual_stages - 1) * n_micro
    tally.add("send", sends, message)
    tally.add("recv", sends, message)
    if m.tie_embeddings:
        tally.add("all_reduce", 1, m.vocab_size * m.d_model // dims.tp * FP32)


def predicted_collectives(cfg: RunConfig, dims: ParallelDims) -> dict[str, dict[str, int]]:
    """{kind: {"count", "bytes"}} of one step on global rank 0 (a decoder; HSDP, FSDP
    with a pipeline and encoder-decoders are timed in `step_time.py` but not counted here)."""
    if cfg.model.arch != "decoder" or dims.dp_replicate > 1 or (dims.dp > 1 and dims.pp > 1):
        raise NotImplementedError(
            "collectives are counted for decoders under dp_shard, tp and pp, not HSDP or "
            "FSDP with a pipeline"
        )
    tally = Tally()
    n_micro = micro_batches(cfg, dims.dp)
    if dims.dp > 1:
        tally.add("all_reduce", 1, 4)  # the loss-token normaliser
        tally.add("all_reduce", 1, 8)  # the loss sums over dp
    if dims.pp > 1:
        tally.add("all_reduce", 1, 8)  # loss sums from the last stage
    tally.add("all_reduce", 1, 8)  # the gradient norm
    if dims.dp_shard > 1:
        add_fsdp(tally, cfg, dims, n_micro)
    if dims.tp > 1:
        add_tensor_parallel(tally, cfg, dims, n_micro)
    if dims.pp > 1:
        add_pipeline(tally, cfg, dims, n_micro)
    return dict(tally)
