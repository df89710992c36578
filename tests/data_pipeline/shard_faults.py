"""A shard made unreadable while a stream reads (run in the test process, or as a script in a
process without the capabilities that let root read any file):

    python -m tests.data_pipeline.shard_faults DATA_DIR FAULT WORKERS LOG_FILE
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tarfile
from collections import Counter
from pathlib import Path

from causeway.data_pipeline.shards.index import read_index
from causeway.data_pipeline.stream import DataStream

from .stream_helpers import chunks_in

ARGS = {"split": "train", "objective": "full_lm", "arch": "decoder", "seq_len": 256,
        "batch_size": 2, "readers": 2, "seed": 1, "provenance": True, "loop": False}  # fmt: skip
FAULTS = ("directory", "dangling_symlink", "no_permission", "truncated")
CUT_SAMPLE = 4  # "truncated" cuts the shard inside this sample's data


def damage(path: Path, fault: str) -> None:
    """Make the shard at `path` unreadable the way `fault` says."""
    if fault == "directory":  # what a failed copy or a wrong mount leaves
        path.unlink()
        path.mkdir()
    elif fault == "dangling_symlink":  # a link into a storage that is gone
        path.unlink()
        path.symlink_to(path.parent / "gone" / path.name)
    elif fault == "no_permission":
        path.chmod(0)
    elif fault == "truncated":
        with tarfile.open(path) as archive:
            cut = archive.getmembers()[CUT_SAMPLE].offset_data + 10
        os.truncate(path, cut)
    else:
        raise ValueError(fault)


def read_with_fault(data_dir: Path, fault: str, workers: int, log_file: Path) -> dict:
    """One pass over the train split; after the first batch, the last shard still queued for
    reader 0 (not opened yet: several shards ahead) is damaged. Returns the damaged shard's
    number, the documents seen per shard, the metrics and how often a chunk was seen twice."""
    handler = logging.FileHandler(log_file)  # workers (forked) write to it as well
    logger = logging.getLogger("causeway.data")
    logger.addHandler(handler)
    try:
        stream = DataStream(data_dir, num_workers=workers, **ARGS)
        batches = [next(stream)]
        queue = stream.state_dict()["reader_states"][0][0][0]  # reader 0, source 0
        assert len(queue) >= 3, queue
        shard = queue[-1][1]
        names = [s["name"] for s in read_index(data_dir)["splits"]["train"]["shards"]]
        damage(data_dir / names[shard], fault)
        batches += list(stream)
        metrics = stream.metrics()
        stream.close()
    finally:
        logger.removeHandler(handler)
        handler.close()
    chunks = chunks_in(batches)
    documents = Counter(s for s, _ in {(shard, sample) for _, shard, sample, _ in chunks})
    return {
        "shard": shard,
        "name": names[shard],
        "documents": [documents.get(k, 0) for k in range(len(names))],
        "metrics": metrics,
        "repeated": sum(1 for n in chunks.values() if n > 1),
    }


if __name__ == "__main__":
    data, fault, workers, log = sys.argv[1:]
    print(json.dumps(read_with_fault(Path(data), fault, int(workers), Path(log))))
