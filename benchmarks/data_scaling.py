"""Reading by share: what each data-parallel rank reads, under 1, 2 and 4 ranks (processes).

Data: the builtin corpus in shards of 100 documents (22 shards, more than the 16 readers, so
no shard is cut). Every rank runs the train stream of one recipe-like setting (full_lm,
decoder, seq 2048, global batch 16, the default 16 readers) for the same number of global
batches, in its own process, all ranks at once. Per rank it reports shard bytes read,
documents started and document tokens per second. The peer, measured in the same run, is
the old design in which every rank built the whole global batch and kept its rows
(world_size 1 on every rank): its per-rank bytes do not fall with the number of ranks.

Goal: per-rank bytes at dp 4 / dp 1 <= 0.30 (ideal 0.25). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

from causeway.data_pipeline.prepare.prepare import prepare_builtin
from causeway.data_pipeline.stream import DataStream

SETTING = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 2048,
           "batch_size": 16}  # fmt: skip


def read_rank(data_dir: str, rank: int, world_size: int, batches: int, by_share: bool) -> dict:
    """One rank's reading of `batches` global batches."""
    if by_share:
        stream = DataStream(Path(data_dir), rank=rank, world_size=world_size, **SETTING)
    else:  # the old design: the whole global batch on every rank
        stream = DataStream(Path(data_dir), **SETTING)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    seconds = time.perf_counter() - start
    metrics = stream.metrics()
    name = Path(data_dir).name
    return {
        "rank": rank,
        "bytes_read": stream.bytes_read,
        "documents": metrics[f"data/documents/{name}"],
        "tokens_per_s": round(metrics[f"data/tokens/{name}"] / seconds),
    }


def run_layout(data_dir: Path, world_size: int, batches: int, by_share: bool) -> list[dict]:
    args = [(str(data_dir), r, world_size, batches, by_share) for r in range(world_size)]
    with mp.get_context("spawn").Pool(world_size) as pool:
        return pool.starmap(read_rank, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="causeway-scaling-") as tmp:
        data = prepare_builtin(Path(tmp) / "builtin", vocab_size=4096, docs_per_shard=100)
        layouts = {}
        for by_share in (True, False):
            for world in (1, 2, 4):
                ranks = run_layout(data, world, args.batches, by_share)
                layouts[f"{'share' if by_share else 'whole_batch'}_dp{world}"] = ranks
    per_rank = {k: sum(r["bytes_read"] for r in v) / len(v) for k, v in layouts.items()}
    report = {
        "cpu_cores": os.cpu_count(),
        "global_batches": args.batches,
        "setting": SETTING,
        "layouts": layouts,
        "mean_bytes_per_rank": {k: round(v) for k, v in per_rank.items()},
        "share_dp2_vs_dp1_bytes": round(per_rank["share_dp2"] / per_rank["share_dp1"], 3),
        "share_dp4_vs_dp1_bytes": round(per_rank["share_dp4"] / per_rank["share_dp1"], 3),
        "whole_batch_dp4_vs_dp1_bytes": round(
            per_rank["whole_batch_dp4"] / per_rank["whole_batch_dp1"], 3
        ),
        "goal_dp4_vs_dp1": "<= 0.30",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
