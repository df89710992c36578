"""One training step (forward, backward, AdamW) of causeway's decoder vs transformers' Llama.

Same shape for both (d_model 512, 8 layers, 8 heads, ffn 1376, vocab 8192, tied
embeddings, batch 8 x 256, fp32, 2 threads), measured in one process, interleaved so
that both see the same machine state. Also the step time of prefix over causal
visibility on the same batch. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from causeway.config.schema import ModelConfig
from causeway.models import build_model, materialize

SHAPE = dict(d_model=512, n_layers=8, n_heads=8, d_ff=1376, vocab_size=8192)
BATCH, SEQ = 8, 256


def causeway_step(visibility: str):
    cfg = ModelConfig(visibility=visibility, max_seq_len=SEQ, attention="sdpa", **SHAPE)
    model = materialize(build_model(cfg), "cpu", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(
        0, cfg.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0)
    )
    targets = torch.roll(tokens, -1, 1)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    extra = {}
    if visibility == "prefix":
        # One document per row, prefix of half the row: the paper's ND:PLM shape.
        extra["prefix_lengths"] = torch.tensor([[0, SEQ // 2]] * BATCH)

    def step():
        sums = model(tokens, **extra, targets=targets, loss_mask=mask)
        loss = sums.total(sums.tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_step():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=SHAPE["d_model"], num_hidden_layers=SHAPE["n_layers"],
        num_attention_heads=SHAPE["n_heads"], num_key_value_heads=SHAPE["n_heads"],
        intermediate_size=SHAPE["d_ff"], vocab_size=SHAPE["vocab_size"],
        tie_word_embeddings=True, max_position_embeddings=SEQ, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(
        0, cfg.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0)
    )

    def step():
        out = model(input_ids=tokens, labels=tokens)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    steps = {
        "causeway": causeway_step("causal"),
        "hf": hf_step(),
        "prefix": causeway_step("prefix"),
    }
    for step in steps.values():
        timed(step, args.warmup)
    times = {name: [] for name in steps}
    for _ in range(args.repeats):  # interleave so drift hits every contender alike
        for name, step in steps.items():
            times[name] += timed(step, 1)
    median = {name: statistics.median(t) for name, t in times.items()}
    tokens = BATCH * SEQ
    print(json.dumps({
        "benchmark": "model_step",
        "shape": {**SHAPE, "batch": BATCH, "seq_len": SEQ, "dtype": "fp32", "threads": 2},
        "causeway_tokens_per_s": round(tokens / median["causeway"], 1),
        "hf_tokens_per_s": round(tokens / median["hf"], 1),
        "ratio_vs_hf": round(median["hf"] / median["causeway"], 3),
        "ratio_vs_hf_goal": 1.1,
        "prefix_step_s": round(median["prefix"], 4),
        "causal_step_s": round(median["causeway"], 4),
        "prefix_over_causal": round(median["prefix"] / median["causeway"], 3),
        "prefix_over_causal_goal": 1.10,
        "repeats": args.repeats,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
