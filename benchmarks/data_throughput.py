"""Data pipeline throughput, each figure beside its peer measured in the same run on the same data.

- full_lm: packed decoder batches (seq 2048, batch 8, one process, the default 8 readers,
  sha256 checked) vs reading the same shards' raw bytes with Python's tarfile. Goal >= 10 M
  tokens/s and >= 0.5 of the raw rate.
- span_corruption: packed batches, one process: encoder-decoder (T5 shape, inputs 512) and
  decoder (seq 2048). Goal >= 2 M tokens/s.
- prepare: `prepare_files` (one process per core, 4 input files) vs the tokenizer's own
  `encode_batch` over the same texts in batches of 1000 (its thread pool uses every core).
  Goal >= 0.7.

Data: the builtin corpus (stdlib docstrings, real English text, about 150 tokens per document
with its 4096-token BPE), repeated to get stable timings. Tokens are document tokens read per
second. Each figure is the best of `--repeats` rounds; each round runs a figure and its peer
back to back, so both see the same machine load. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from causeway.data_pipeline.prepare.corpus import builtin_documents
from causeway.data_pipeline.prepare.prepare import prepare_builtin, prepare_files
from causeway.data_pipeline.shards.index import read_index, write_index
from causeway.data_pipeline.shards.samples import decode_samples
from causeway.data_pipeline.shards.sources import Source, load_source
from causeway.data_pipeline.shards.tar_reader import TarSamples
from causeway.data_pipeline.shards.urls import open_url
from causeway.data_pipeline.shards.writer import SplitWriter, token_dtype
from causeway.data_pipeline.stream import DataStream
from causeway.data_pipeline.tokenizer import Tokenizer

READ_COPIES = 60  # ~20 M tokens of shards
PREPARE_COPIES = 8  # ~2.8 M tokens of text
PREPARE_FILES = 4


def best_rates(runs: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Best tokens/s of each run (a function returning the tokens it processed) over `repeats`
    rounds; every round runs each of them once, so peers see the same machine load."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            tokens = run()
            best[name] = max(best[name], tokens / (time.perf_counter() - start))
    return best


def read_documents(data_dir: Path, split: str) -> list[np.ndarray]:
    """Every document of `split`, in index order, read with the stream's own tar reader."""
    data = load_source(Source(str(data_dir)), split)
    docs = []
    for shard in data.shards:
        tar = TarSamples(open_url(shard.url), shard.url)
        samples, error = tar.read(shard.documents, 1 << 62)
        tar.close()
        if error is not None:
            raise error
        _, parts, _, _, bad = decode_samples(samples, data)
        if bad:
            raise ValueError(f"{shard.url}: sample {bad[0][0]}: {bad[0][1]}")
        docs += [np.frombuffer(part, dtype=data.dtype).astype(np.int64) for part in parts]
    return docs


def build_read_shards(builtin: Path, out: Path, copies: int) -> Path:
    """The builtin train documents, `copies` times over, in 1 MiB shards with sha256 (about
    40: more than the default readers, 8 or 32, so no shard is cut)."""
    docs = read_documents(builtin, "train")
    index = read_index(builtin)
    dtype = token_dtype(index["vocab_size"])
    out.mkdir(parents=True, exist_ok=True)
    writer = SplitWriter(out, "train", dtype, shard_bytes=2**20)
    for number in range(copies * len(docs)):
        writer.write(number, tokens=docs[number % len(docs)])
    entry = writer.close()
    (out / "tokenizer.json").write_bytes((builtin / "tokenizer.json").read_bytes())
    write_index(out, {**index, "splits": {"train": entry}})
    return out


def raw_tarfile(data_dir: Path) -> int:
    """Every member's bytes through Python's tarfile; tokens = bytes / 2 (uint16)."""
    total = 0
    for shard in read_index(data_dir)["splits"]["train"]["shards"]:
        with tarfile.open(data_dir / shard["name"]) as archive:
            for member in archive:
                total += len(archive.extractfile(member).read())
    return total // 2


def one_pass(data_dir: Path, objective: str, arch: str, seq_len: int, batch: int) -> int:
    stream = DataStream(data_dir, "train", objective, arch, seq_len, batch, loop=False)
    for _ in stream:
        pass
    return int(stream.metrics()[f"data/tokens/{data_dir.name}"])


def prepare_inputs(texts: list[str], out: Path) -> list[Path]:
    paths = []
    for k in range(PREPARE_FILES):
        path = out / f"part{k}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for text in texts[k::PREPARE_FILES]:
                f.write(json.dumps({"text": text}) + "\n")
        paths.append(path)
    return paths


def tokenizer_rate(tokenizer: Tokenizer, texts: list[str]) -> int:
    return sum(len(ids) for i in range(0, len(texts), 1000)
               for ids in tokenizer.encode_batch(texts[i : i + 1000]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="causeway-bench-") as tmp:
        root = Path(tmp)
        builtin = prepare_builtin(root / "builtin", vocab_size=4096)
        shards = build_read_shards(builtin, root / "shards", READ_COPIES)
        r = args.repeats
        read = best_rates({
            "raw": lambda: raw_tarfile(shards),
            "full_lm": lambda: one_pass(shards, "full_lm", "decoder", 2048, 8),
            "span_ed": lambda: one_pass(shards, "span_corruption", "encoder_decoder", 512, 32),
            "span_decoder": lambda: one_pass(shards, "span_corruption", "decoder", 2048, 8),
        }, r)  # fmt: skip

        texts = builtin_documents() * PREPARE_COPIES
        inputs = prepare_inputs(texts, root)
        tokenizer = Tokenizer.from_file(builtin / "tokenizer.json")
        counter = iter(range(10**6))

        def prepare() -> int:
            out = prepare_files(inputs, builtin / "tokenizer.json", root / f"p{next(counter)}")
            return read_index(out)["splits"]["train"]["tokens"]

        # prepare first in each round: its forked workers then get their own tokenizer thread
        # pools only in round one; from then on the parent's pool has been used and tokenizers
        # runs each child single-threaded (one process per core either way).
        prep = best_rates({"prepare": prepare,
                           "encode": lambda: tokenizer_rate(tokenizer, texts)}, r)  # fmt: skip
        full, raw = read["full_lm"], read["raw"]
        report = {
            "cpu_cores": os.cpu_count(),
            "statistic": f"best of {r} interleaved rounds, tokens/s",
            "read_tokens": read_index(shards)["splits"]["train"]["tokens"],
            "full_lm_tokens_per_s": round(full),
            "raw_tarfile_tokens_per_s": round(raw),
            "full_lm_vs_raw": round(full / raw, 2),
            "span_corruption_ed_tokens_per_s": round(read["span_ed"]),
            "span_corruption_decoder_tokens_per_s": round(read["span_decoder"]),
            "prepare_tokens": read_index(root / "p0")["splits"]["train"]["tokens"],
            "prepare_tokens_per_s": round(prep["prepare"]),
            "tokenizer_encode_batch_tokens_per_s": round(prep["encode"]),
            "prepare_vs_tokenizer": round(prep["prepare"] / prep["encode"], 2),
            "goals": {"full_lm_tokens_per_s": 1e7, "full_lm_vs_raw": 0.5,
                      "span_corruption_tokens_per_s": 2e6, "prepare_vs_tokenizer": 0.7},
        }  # fmt: skip
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
