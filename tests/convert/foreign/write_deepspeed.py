"""Train a tiny model with DeepSpeed ZeRO on the CPU and let DeepSpeed save it (run under
torchrun, 2 ranks, gloo), for tests/convert/foreign.

    DS_ACCELERATOR=cpu torchrun --nproc-per-node 2 write_deepspeed.py OUT STAGE NAMES

NAMES is `causeway` (a causeway Decoder, the module's names are causeway's) or `hf` (a
transformers LlamaForCausalLM). Writes OUT/ds/ (DeepSpeed's `save_checkpoint`) and
OUT/logits.pt (the engine's logits on fixed tokens after training).

DeepSpeed's CPU accelerator builds a shared-memory all-reduce kernel with g++ at its
first start (about 100 s here). It is an optional fast path of CPU collectives: gloo
carries them without it, and the checkpoint files do not depend on it, so the writer
tells DeepSpeed it is unavailable.
"""

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

MODEL = dict(vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
             max_seq_len=64, norm_eps=1e-6, tie_embeddings=False)  # fmt: skip
TOKENS = torch.tensor([[1, 5, 9, 200, 30, 255, 7, 7], [42, 0, 11, 12, 13, 14, 15, 16]])


def build(names: str) -> torch.nn.Module:
    torch.manual_seed(7)
    if names == "hf":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=MODEL["vocab_size"], hidden_size=MODEL["d_model"],
            intermediate_size=MODEL["d_ff"], num_hidden_layers=MODEL["n_layers"],
            num_attention_heads=MODEL["n_heads"], num_key_value_heads=MODEL["n_kv_heads"],
            max_position_embeddings=MODEL["max_seq_len"], rms_norm_eps=MODEL["norm_eps"],
            tie_word_embeddings=False, attention_bias=False,
        )  # fmt: skip
        return LlamaForCausalLM(config).float()
    from causeway.config import ModelConfig
    from causeway.models import build_model, materialize

    return materialize(build_model(ModelConfig(**MODEL)), "cpu", seed=7)


def logits_of(engine, tokens, names: str) -> torch.Tensor:
    out = engine(tokens)
    return out.logits if names == "hf" else out


def main(out: Path, stage: int, names: str) -> None:
    import importlib

    import deepspeed

    # `deepspeed.comm.torch` as an attribute is the torch module; the submodule by name:
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None  # see above
    model = build(names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # not DeepSpeed's fused Adam
    config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": stage},
              "steps_per_print": 1000, "gradient_clipping": 1.0}  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    generator = torch.Generator().manual_seed(engine.global_rank)
    for _ in range(3):
        tokens = torch.randint(0, MODEL["vocab_size"], (2, 16), generator=generator)
        logits = logits_of(engine, tokens, names)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
        engine.backward(loss)
        engine.step()
    engine.save_checkpoint(str(out / "ds"))
    engine.eval()
    with torch.no_grad():
        logits = logits_of(engine, TOKENS, names)
    if engine.global_rank == 0:
        torch.save({"tokens": TOKENS, "logits": logits}, out / "logits.pt")


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
