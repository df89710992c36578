"""Turning tar samples into token ids, and checking at start-up that a dataset is readable."""

from __future__ import annotations

from causeway.data_pipeline.shards.sources import SourceData
from causeway.data_pipeline.shards.tar_reader import Sample, TarSamples
from causeway.data_pipeline.shards.urls import exists, open_url


def decode_samples(
    samples: list[Sample], data: SourceData
) -> tuple[list[int], list[memoryview], list[int], list[int], list[tuple[int, str]]]:
    """(kept sample indices, data parts, lengths, input lengths (pairs), [(index, why)] of the
    samples that cannot be decoded)."""
    ext, size = data.extension, data.dtype.itemsize
    kept, parts, lengths, inputs, bad = [], [], [], [], []
    if data.format != "pairs":
        name = f"tokens.{ext}"
        for sample in samples:
            tokens = sample.fields.get(name)
            if tokens is not None and len(tokens) and not len(tokens) % size:
                kept.append(sample.index)
                parts.append(tokens)
                lengths.append(len(tokens) // size)
            else:
                bad.append((sample.index, _why_bad(sample, (name,), size)))
        return kept, parts, lengths, inputs, bad
    names = (f"inputs.{ext}", f"targets.{ext}")
    for sample in samples:
        pair = [sample.fields.get(n) for n in names]
        if (
            pair[0] is None
            or pair[1] is None
            or not len(pair[1])
            or (len(pair[0]) | len(pair[1])) % size
        ):
            bad.append((sample.index, _why_bad(sample, names, size)))
            continue
        kept.append(sample.index)
        parts += pair
        lengths.append((len(pair[0]) + len(pair[1])) // size)
        inputs.append(len(pair[0]) // size)
    return kept, parts, lengths, inputs, bad


def _why_bad(sample: Sample, names: tuple[str, ...], size: int) -> str:
    fields = [sample.fields.get(name) for name in names]
    if any(f is None for f in fields):
        return f"no {' / '.join(names)} field (fields: {sorted(sample.fields)})"
    if any(len(f) % size for f in fields):
        return f"length not a multiple of {size} bytes"
    return "no tokens" if len(fields) == 1 else "empty targets"


def probe_source(data: SourceData) -> None:
    """Fail at start-up, naming the dataset, if not one of its shards yields a document."""
    if not data.shards or data.documents == 0:
        raise RuntimeError(f"dataset {data.name!r} ({data.path}): split {data.split!r} is empty")
    problems = []
    for shard in data.shards:
        if shard.documents == 0:
            continue
        if exists(shard.url) is False:
            problems.append(f"{shard.url}: missing")
            continue
        try:
            tar = TarSamples(open_url(shard.url), shard.url)
        except (OSError, ValueError) as e:
            problems.append(f"{shard.url}: cannot open ({e})")
            continue
        samples, error = tar.read(1, 1 << 40)
        tar.close()
        if decode_samples(samples, data)[0]:
            return
        problems.append(str(error) if error else f"{shard.url}: no decodable sample")
    raise RuntimeError(
        f"dataset {data.name!r} ({data.path}), split {data.split!r}: nothing is readable; none of "
        f"its {len(data.shards)} shards gave a document (first problem: {problems[0]})"
    )
