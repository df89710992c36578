"""`causeway data inspect DIR`: what a prepared dataset holds, and whether its shards are intact.

`inspect_dataset` returns a report: format, tokenizer, per split the shard, document and token
counts (with the smallest and largest shard), and a few decoded documents. With `verify=True`
every shard is read to its end and checked: sample count and sha256 against index.json,
missing, truncated or corrupt shards (the same checks the reader makes while training).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from causeway.data_pipeline.shards.samples import decode_samples
from causeway.data_pipeline.shards.sources import Source, SourceData, load_source, read_index_at
from causeway.data_pipeline.shards.tar_reader import ShardError, TarSamples
from causeway.data_pipeline.shards.urls import open_url
from causeway.data_pipeline.tokenizer import Tokenizer

SAMPLE_CHARS = 300


@dataclass
class ShardCheck:
    name: str
    problem: str | None


def inspect_dataset(
    data_dir: str | Path, samples: int = 3, verify: bool = False, split: str = "train"
) -> str:
    """A human-readable report of the dataset at `data_dir` (a directory or http(s) URL)."""
    location = str(data_dir)
    index = read_index_at(location)
    lines = [
        f"dataset   {location}",
        f"format    {index['format']} ({index['dtype']} ids), vocabulary {index['vocab_size']}, "
        f"tokenizer {index['tokenizer']}",
    ]
    for name, entry in sorted(index["splits"].items()):
        lines.append(_split_line(name, entry))
    if split in index["splits"] and samples > 0:
        data = load_source(Source(location), split)
        lines.append(f"first {samples} documents of {split}:")
        lines += _sample_lines(data, samples)
    if verify:
        for name in sorted(index["splits"]):
            checks = verify_split(load_source(Source(location), name))
            bad = [c for c in checks if c.problem]
            lines.append(f"verify {name}: {len(checks) - len(bad)} of {len(checks)} shards ok")
            lines += [f"  {c.name}: {c.problem}" for c in bad]
    return "\n".join(lines)


def _split_line(name: str, entry: dict) -> str:
    shards = entry["shards"]
    sizes = [s.get("bytes") for s in shards if s.get("bytes") is not None]
    size = f", {sum(sizes) / 2**20:.1f} MiB ({min(sizes)}..{max(sizes)} bytes)" if sizes else ""
    return (
        f"{name:<9} {len(shards)} shards, {entry['documents']:,} documents, "
        f"{entry['tokens']:,} tokens{size}"
    )


def _sample_lines(data: SourceData, count: int) -> list[str]:
    tokenizer = Tokenizer.from_str(data.tokenizer_bytes.decode("utf-8"))
    lines: list[str] = []
    for shard in data.shards:
        if len(lines) >= count:
            break
        tar = TarSamples(open_url(shard.url), shard.url)
        samples, _ = tar.read(count - len(lines), 1 << 30)
        tar.close()
        kept, parts, lengths, inputs, _ = decode_samples(samples, data)
        for i, index in enumerate(kept):
            ids = _ids(parts, i, data)
            text = tokenizer.decode(ids)
            if inputs and data.format == "pairs":
                split = inputs[i]
                text = f"{tokenizer.decode(ids[:split])!r} -> {tokenizer.decode(ids[split:])!r}"
            text = text.replace("\n", "\\n")  # one line per document
            clipped = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "..."
            lines.append(f"  [{shard.name} #{index}, {lengths[i]} tokens] {clipped}")
    return lines


def _ids(parts: list[memoryview], i: int, data: SourceData) -> list[int]:
    chunk = parts[2 * i : 2 * i + 2] if data.format == "pairs" else [parts[i]]
    return np.frombuffer(b"".join(chunk), dtype=data.dtype).tolist()


def verify_split(data: SourceData) -> list[ShardCheck]:
    """Read every shard of a split to its end; one check per shard."""
    return [_verify_shard(data, i) for i in range(len(data.shards))]


def _verify_shard(data: SourceData, i: int) -> ShardCheck:
    shard = data.shards[i]
    try:
        tar = TarSamples(open_url(shard.url), shard.url, hash_bytes=True)
    except (OSError, ValueError) as e:
        return ShardCheck(shard.name, f"missing or unreadable ({e})")
    count, bad = 0, 0
    try:
        while True:
            samples, error = tar.read(4096, 1 << 26)
            if error is not None:
                return ShardCheck(
                    shard.name, f"{error.reason} after {count + len(samples)} samples"
                )
            if not samples:
                break
            count += len(samples)
            bad += len(decode_samples(samples, data)[4])
        digest = tar.hexdigest() or hashlib.sha256(b"").hexdigest()
    except ShardError as e:
        return ShardCheck(shard.name, e.reason)
    finally:
        tar.close()
    problems = []
    if tar.bytes_read == 0:
        problems.append("empty or missing")
    if count != shard.documents:
        problems.append(f"{count} samples, index.json says {shard.documents}")
    if bad:
        problems.append(f"{bad} undecodable samples")
    if shard.sha256 is not None and digest != shard.sha256:
        problems.append(f"sha256 {digest[:16]}... differs from index.json {shard.sha256[:16]}...")
    return ShardCheck(shard.name, "; ".join(problems) or None)
