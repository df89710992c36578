"""Scoring and generation throughput of a tiny-recipe model on CPU, each against its peer
in the same run: batched rank classification (`inference/scoring.py`, the builtin
held-out suite) against one continuation per forward, and generation with the KV cache
against recomputing every position.

Weights are freshly initialised (throughput does not depend on them). Prints one JSON
object. Run: python benchmarks/inference.py [--recipe tiny-cd-flm] [--examples 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from causeway.config import load_config
from causeway.data_pipeline.prepare.builtin_tasks import write_heldout_tasks
from causeway.data_pipeline.tokenizer import Tokenizer
from causeway.evaluation.tasks import continuation, load_task, task_files
from causeway.inference.generation import Generation, generate
from causeway.inference.scoring import Request, score
from causeway.models import build_model, materialize
from causeway.train.data import resolve_data_dir


def requests_of(tasks, tok) -> tuple[list[Request], int]:
    asked, examples = [], 0
    for task in tasks:
        for example in task.examples:
            for prompt in example.prompts:
                examples += 1
                asked += [Request(tok.encode(prompt), tok.encode(continuation(prompt, c)))
                          for c in example.choices]  # fmt: skip
    return asked, examples


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="tiny-cd-flm")
    parser.add_argument("--examples", type=int, default=60, help="per held-out task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = load_config(args.recipe)
    model = materialize(build_model(cfg.model, "cpu"), "cpu", seed=0).eval()
    with contextlib.redirect_stdout(sys.stderr):  # "building the builtin dataset": not JSON
        tok = Tokenizer.from_dataset(resolve_data_dir(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [load_task(p) for p in task_files([write_heldout_tasks(Path(tmp), args.examples)])]
    asked, examples = requests_of(tasks, tok)
    one = timed(lambda: score(model, asked, tok.pad_id, tok.eos_id, batch_size=1))
    batched = timed(lambda: score(model, asked, tok.pad_id, tok.eos_id, args.batch_size))
    keep = cfg.model.max_seq_len - args.new_tokens
    prompts = [tok.encode(t.examples[i].prompts[0])[-keep:] for t in tasks for i in range(4)]
    how = Generation(args.new_tokens, stop_at=None)
    cached = timed(lambda: generate(model, prompts, how, tok.pad_id))
    uncached = timed(
        lambda: generate(
            model, prompts, Generation(args.new_tokens, stop_at=None, use_cache=False), tok.pad_id
        )
    )
    new_tokens = len(prompts) * args.new_tokens
    print(json.dumps({
        "recipe": args.recipe, "threads": torch.get_num_threads(),
        "scoring": {"examples": examples, "choices": len(asked), "batch_size": args.batch_size,
                    "examples_per_s": examples / batched, "examples_per_s_batch_1": examples / one,
                    "speedup": one / batched},
        "generation": {"prompts": len(prompts), "new_tokens": args.new_tokens,
                       "tokens_per_s_cached": new_tokens / cached,
                       "tokens_per_s_uncached": new_tokens / uncached,
                       "speedup": uncached / cached},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
