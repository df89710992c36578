"""Shards over `pipe:` commands and http (a local server), through webdataset's handlers."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from causeway.data_pipeline.shards.inspection import inspect_dataset
from causeway.data_pipeline.shards.sources import Source
from causeway.data_pipeline.stream import DataStream

from .stream_helpers import same, take

ARGS = {"split": "train", "objective": "span_corruption", "arch": "decoder", "seq_len": 48,
        "batch_size": 2, "seed": 0, "readers": 2}  # fmt: skip


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server(uneven: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An http server on 127.0.0.1 serving a copy of the dataset; yields (URL, copy)."""
    root = tmp_path / "www"
    shutil.copytree(uneven, root / "uneven")
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/uneven", root / "uneven"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_pipe_command_shards_read_like_local_ones(uneven: Path) -> None:
    piped = Source(str(uneven), shards=f"pipe:cat {uneven}/{{name}}")
    assert same(take(DataStream(piped, **ARGS), 25), take(DataStream(uneven, **ARGS), 25))


def test_http_dataset_reads_like_the_local_one(server: tuple[str, Path], uneven: Path) -> None:
    url, copy = server
    remote = DataStream(url, **ARGS)
    assert same(take(remote, 25), take(DataStream(uneven, **ARGS), 25))
    assert "7 shards, 171 documents" in inspect_dataset(url, samples=1)
    (copy / "train-000003.tar").unlink()  # now a 404: counted as missing, the rest goes on
    s = DataStream(url, **(ARGS | {"readers": 1}))
    take(s, 400)
    assert s.metrics()["data/missing_shards"] >= 1
    assert s.metrics()["data/bad_shards"] == 0
