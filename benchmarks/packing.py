"""Padding per objective: the stream's packing against next-fit on the same examples.

For each objective and architecture, at the tiny recipes' row lengths (128) and at the paper's
(decoders 626, encoder-decoders inputs 512 / targets 114, prefix LM 626 / 626), the train
stream runs `--batches` global batches of 16 rows and reports `data/padding_fraction`. The
peer, measured in the same run on the same example sizes, is next-fit (the packer before
this one: an example that does not fit closes the row, nothing is split or looked ahead).

Two length distributions: the builtin corpus (stdlib docstrings, about 150 tokens per
document) and a C4-like one (log-normal lengths, median 230 and mean about 410 tokens, as
C4's English documents under a 32k-token vocabulary), random token ids written with the real
shard writer. Goals: full_lm <= 1%, atomic objectives <= 5%. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from causeway.data_pipeline.prepare.prepare import prepare_builtin
from causeway.data_pipeline.shards.index import read_index
from causeway.data_pipeline.shards.writer import SplitWriter, token_dtype
from causeway.data_pipeline.stream import DataStream
from causeway.data_pipeline.stream.reader import Reader, ReaderState

CASES = [  # objective, arch, seq_len, inputs_length, targets_length
    ("full_lm", "decoder", 128, None, None),
    ("prefix_lm", "decoder", 128, None, None),
    ("span_corruption", "decoder", 128, None, None),
    ("span_corruption", "encoder_decoder", 128, None, None),
    ("full_lm", "decoder", 626, None, None),
    ("prefix_lm", "decoder", 626, None, None),
    ("span_corruption", "decoder", 626, None, None),
    ("span_corruption", "encoder_decoder", 512, 512, 114),
    ("prefix_lm", "encoder_decoder", 626, 626, 626),
]


def c4_like(builtin: Path, out: Path, documents: int, seed: int = 0) -> Path:
    """A train split of `documents` random documents with C4-like log-normal lengths."""
    index = read_index(builtin)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    lengths = np.clip(rng.lognormal(np.log(230), 0.9, documents).astype(int), 8, 20000)
    writer = SplitWriter(out, "train", token_dtype(index["vocab_size"]), shard_bytes=8 << 20)
    for number, n in enumerate(lengths):
        writer.write(number, tokens=rng.integers(300, index["vocab_size"], n))
    (out / "tokenizer.json").write_bytes((builtin / "tokenizer.json").read_bytes())
    index = {**index, "splits": {"train": writer.close()}}
    (out / "index.json").write_text(json.dumps(index), encoding="utf-8")
    return out


def example_sizes(stream: DataStream):
    """Per block, the example sizes (per side) the stream's one reader makes, in order."""
    reader = Reader(stream.spec, 0, ReaderState.initial(len(stream.spec.datas)))
    while (docs := reader.walks[0].next_block()) is not None:
        docs.source = 0
        yield Reader.sizes_of(stream.objective(docs, stream.spec.seed))


def next_fit_padding(stream: DataStream, batches: int) -> float:
    """Padding of next-fit over the examples the stream's objective makes of its documents."""
    capacity = stream.spec.capacity
    rows = filled = 0
    used = [0] * len(capacity)
    for block in example_sizes(stream):
        for sizes in zip(*[side.tolist() for side in block], strict=True):
            if any(u + s > c for u, s, c in zip(used, sizes, capacity, strict=True)):
                rows, used = rows + 1, [0] * len(capacity)
            used = [u + s for u, s in zip(used, sizes, strict=True)]
            filled += sum(sizes)
        if rows >= batches * stream.spec.rows:
            break
    return 1 - filled / ((rows + 1) * sum(capacity))


def padding(data: Path, case: tuple, batches: int) -> dict:
    objective, arch, seq_len, inputs, targets = case
    args = dict(inputs_length=inputs, targets_length=targets, readers=1)
    stream = DataStream(data, "train", objective, arch, seq_len, 16, **args)
    for _ in range(batches):
        next(stream)
    ours = stream.metrics()["data/padding_fraction"]
    peer = next_fit_padding(DataStream(data, "train", objective, arch, seq_len, 16, **args),
                            batches)  # fmt: skip
    name = f"{objective}/{arch}/" + (f"{inputs}+{targets}" if inputs else str(seq_len))
    return {"case": name, "padding": round(ours, 4), "next_fit_padding": round(peer, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="causeway-packing-") as tmp:
        builtin = prepare_builtin(Path(tmp) / "builtin", vocab_size=4096)
        c4 = c4_like(builtin, Path(tmp) / "c4like", 20000)
        report = {
            "global_batch": 16,
            "batches": args.batches,
            "builtin": [padding(builtin, case, args.batches) for case in CASES],
            "c4_like": [padding(c4, case, args.batches) for case in CASES],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
