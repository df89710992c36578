"""Write Megatron-LM checkpoints with megatron-core itself (run under torchrun, 4 ranks:
tensor parallel 2 x pipeline parallel 2, gloo, CPU), for tests/convert/foreign.

    torchrun --nproc-per-node 4 write_megatron.py OUT

megatron-core builds the GPTModel on the CPU (`use_cpu_initialization`, the local layer
spec, fusions off) and writes:
- OUT/legacy/: Megatron-LM's legacy layout. Megatron-LM's `save_checkpoint` (in the
  megatron.training package, which megatron-core does not ship) saves each rank's
  `model.state_dict()` with the args into iter_N/mp_rank_TT_PPP/model_optim_rng.pt and
  writes the tracker file; this does the same with megatron-core's state dicts.
- OUT/torch_dist/: `megatron.core.dist_checkpointing.save` of `sharded_state_dict()`,
  with the args as common state, as Megatron-LM's torch_dist save does.
- OUT/logits.pt: the model's logits on fixed tokens (a pipelined forward by hand).
- OUT/layernorm/: a tensor-parallel legacy checkpoint of megatron-core's default
  settings (LayerNorm, linear biases), which causeway must refuse.

A shim maps the few CUDA calls of megatron-core's forward and its RNG tracker to CPU
no-ops (dropout is zero, so the tracker's fork does not matter).
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

VOCAB, PADDED, HIDDEN, LAYERS, HEADS, GROUPS, FFN, SEQ = 4100, 4352, 64, 4, 4, 2, 128, 128
TOKENS = torch.tensor([[1, 5, 9, 200, 3000, 4099, 7, 7], [42, 0, 11, 12, 13, 14, 15, 16]])


def cpu_shims() -> None:
    from megatron.core import tensor_parallel

    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_device = lambda: "cpu"

    class Tracker:
        def fork(self, *a, **k):
            return contextlib.nullcontext()

    tensor_parallel.get_cuda_rng_tracker = lambda *a, **k: Tracker()


def transformer_config(supported: bool):
    from megatron.core.transformer import TransformerConfig

    settings = dict(
        num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS, ffn_hidden_size=FFN,
        use_cpu_initialization=True, params_dtype=torch.float32, hidden_dropout=0.0,
        attention_dropout=0.0, bias_activation_fusion=False, masked_softmax_fusion=False,
        persist_layer_norm=False, bias_dropout_fusion=False, apply_rope_fusion=False,
        gradient_accumulation_fusion=False, init_method_std=0.02, layernorm_epsilon=1e-5,
        tensor_model_parallel_size=2, pipeline_model_parallel_size=2, pipeline_dtype=torch.float32,
    )  # fmt: skip
    if supported:  # what causeway represents: RMSNorm, no biases, gated SiLU, GQA
        settings.update(num_query_groups=GROUPS, gated_linear_unit=True, activation_func=F.silu,
                        add_bias_linear=False, normalization="RMSNorm")  # fmt: skip
    return TransformerConfig(**settings)


def megatron_args(supported: bool, tp: int, pp: int) -> argparse.Namespace:
    """The args Megatron-LM's arguments.py would have saved for this model."""
    from megatron.core.transformer.enums import AttnBackend

    args = argparse.Namespace(
        num_layers=LAYERS, hidden_size=HIDDEN, ffn_hidden_size=FFN, num_attention_heads=HEADS,
        kv_channels=HIDDEN // HEADS, max_position_embeddings=SEQ, seq_length=SEQ,
        position_embedding_type="rope", rotary_base=10000, rotary_percent=1.0,
        rotary_interleaved=False, norm_epsilon=1e-5, vocab_size=VOCAB, padded_vocab_size=PADDED,
        make_vocab_size_divisible_by=128, tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp, params_dtype=torch.float32, init_method_std=0.02,
        attention_backend=AttnBackend.auto, transformer_impl="local", iteration=20,
        group_query_attention=supported, num_query_groups=GROUPS if supported else 1,
        normalization="RMSNorm" if supported else "LayerNorm", swiglu=supported,
        add_bias_linear=not supported, add_qkv_bias=False,
        untie_embeddings_and_output_weights=True,
    )  # fmt: skip
    return args


def gpt_model(supported: bool):
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(normalization="RMSNorm" if supported else "LayerNorm")
    return GPTModel(
        transformer_config(supported), spec, vocab_size=PADDED, max_sequence_length=SEQ,
        position_embedding_type="rope", share_embeddings_and_output_weights=False,
        parallel_output=False, pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(),
    )  # fmt: skip


def save_legacy(model, args, root: Path, iteration: int) -> None:
    from megatron.core import parallel_state as ps

    tp, pp = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    shard = f"mp_rank_{tp:02d}" if args.pipeline_model_parallel_size == 1 else (
        f"mp_rank_{tp:02d}_{pp:03d}")  # fmt: skip
    path = root / f"iter_{iteration:07d}" / shard / "model_optim_rng.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    import numpy as np

    rng = {"random_rng_state": None, "np_rng_state": np.random.get_state(),
           "torch_rng_state": torch.get_rng_state()}  # fmt: skip
    state = {"args": args, "checkpoint_version": 3.0, "iteration": iteration,
             "model": model.state_dict(), "rng_state": [rng]}  # fmt: skip
    torch.save(state, path)
    dist.barrier()
    if dist.get_rank() == 0:
        (root / "latest_checkpointed_iteration.txt").write_text(str(iteration))


def save_torch_dist(model, args, root: Path, iteration: int) -> None:
    from megatron.core import dist_checkpointing

    directory = root / f"iter_{iteration:07d}"
    directory.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    state = model.sharded_state_dict()
    state.update(args=args, iteration=iteration, checkpoint_version=3.0)
    dist_checkpointing.save(state, str(directory))
    if dist.get_rank() == 0:
        (root / "latest_checkpointed_iteration.txt").write_text(str(iteration))


def pipelined_logits(model) -> torch.Tensor | None:
    """Stage 0 runs the embedding and its layers and sends the hidden states on."""
    from megatron.core import parallel_state as ps

    positions = torch.arange(TOKENS.shape[1]).expand_as(TOKENS)
    causal = torch.ones(1, 1, TOKENS.shape[1], TOKENS.shape[1], dtype=torch.bool).triu(1)
    with torch.no_grad():
        if ps.is_pipeline_first_stage():
            hidden = model(TOKENS, positions, causal)
            dist.send(hidden.contiguous(), ps.get_pipeline_model_parallel_next_rank())
            return None
        hidden = torch.empty(TOKENS.shape[1], TOKENS.shape[0], HIDDEN)
        dist.recv(hidden, ps.get_pipeline_model_parallel_prev_rank())
        model.set_input_tensor(hidden)
        return model(TOKENS, positions, causal)


def main(out: Path) -> None:
    from megatron.core import parallel_state as ps

    dist.init_process_group("gloo")
    cpu_shims()
    ps.initialize_model_parallel(tensor_model_parallel_size=2, pipeline_model_parallel_size=2)
    torch.manual_seed(1234 + ps.get_pipeline_model_parallel_rank())
    model = gpt_model(supported=True).eval()
    args = megatron_args(True, 2, 2)
    save_legacy(model, args, out / "legacy", 20)
    save_torch_dist(model, args, out / "torch_dist", 20)
    logits = pipelined_logits(model)
    if logits is not None and ps.get_tensor_model_parallel_rank() == 0:
        torch.save({"tokens": TOKENS, "logits": logits}, out / "logits.pt")
    # A second model on the same ranks: megatron-core's defaults, which causeway refuses.
    refused = gpt_model(supported=False)
    save_legacy(refused, megatron_args(False, 2, 2), out / "layernorm", 10)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":  # dist_checkpointing's async saver spawns processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(Path(sys.argv[1]))
