"""Shared fixtures: one small builtin dataset prepared once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from causeway.data_pipeline.prepare.corpus import builtin_documents
from causeway.data_pipeline.prepare.prepare import ensure_builtin
from causeway.data_pipeline.tokenizer import Tokenizer

BUILTIN_PARAMS = {"vocab_size": 512, "val_fraction": 0.02, "docs_per_shard": 500, "seed": 0}


@pytest.fixture(scope="session")
def builtin_params() -> dict:
    """The prepare_builtin arguments of `small_builtin` (a copy: tests may not change them)."""
    return dict(BUILTIN_PARAMS)


@pytest.fixture(scope="session")
def small_builtin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stdlib-docstring corpus with a 512-token BPE, in shards of 500 documents.

    Built through `ensure_builtin` on an empty directory, which must therefore prepare it.
    """
    out = tmp_path_factory.mktemp("builtin")
    return ensure_builtin(out, **BUILTIN_PARAMS)


@pytest.fixture(scope="session")
def tokenizer(small_builtin: Path) -> Tokenizer:
    return Tokenizer.from_file(small_builtin / "tokenizer.json")


@pytest.fixture(scope="session")
def builtin_corpus() -> list[str]:
    """The builtin corpus texts (parsing the stdlib takes a couple of seconds: do it once)."""
    return builtin_documents()


def write_dataset(
    out: Path,
    tokenizer_dir: Path,
    shard_docs: dict[str, list[int]],
    seed: int = 0,
    max_length: int = 200,
    pairs: bool = False,
) -> Path:
    """A prepared dataset of random documents (ids 110..499, EOS last) with the given number of
    documents per shard and split, written with the real shard writer; tokenizer from
    `tokenizer_dir`. Pair datasets get an inputs and a targets part per document."""
    from causeway.data_pipeline.prepare.prepare import index_document
    from causeway.data_pipeline.shards.index import make_split_entry, write_index
    from causeway.data_pipeline.shards.writer import SplitWriter, token_dtype

    tokenizer = Tokenizer.from_file(tokenizer_dir / "tokenizer.json")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    rng = np.random.default_rng(seed)
    dtype = token_dtype(tokenizer.vocab_size)
    splits, number = {}, 0
    for split, counts in shard_docs.items():
        shards = []
        for k, count in enumerate(counts):
            writer = SplitWriter(out, split, dtype, docs_per_shard=max(count, 1), first_shard=k)
            for _ in range(count):
                ids = rng.integers(110, 500, size=int(rng.integers(1, max_length)))
                ids = np.append(ids, tokenizer.eos_id)
                if pairs:
                    cut = int(rng.integers(0, len(ids)))
                    writer.write(number, inputs=ids[:cut], targets=ids[cut:])
                else:
                    writer.write(number, tokens=ids)
                number += 1
            shards += writer.close()["shards"]
        splits[split] = make_split_entry(shards)
    write_index(out, index_document(tokenizer, dtype, pairs, splits))
    return out


UNEVEN = {"train": [40, 3, 25, 60, 1, 30, 12], "val": [20]}


@pytest.fixture(scope="session")
def uneven(small_builtin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """171 random training documents in 7 shards of very different sizes (1 to 60 documents)."""
    return write_dataset(tmp_path_factory.mktemp("data") / "uneven", small_builtin, UNEVEN)
