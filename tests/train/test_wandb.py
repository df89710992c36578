"""The W&B sink in offline mode: a real tiny run mirrored into RUN_DIR/wandb/, its history
read back from the .wandb file, and the same W&B run id when the run is resumed."""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
import time

import pytest

from causeway.config import ConfigError, load_config
from causeway.train.trainer import run_training
from causeway.train.wandb_sink import ID_FILE, STEP_KEY, WandbSink

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

SETS = ["train.steps=4", "data.batch_size=2", "train.log_every=1", "checkpoint.every=2",
        "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.d_ff=64",
        "data.seq_len=32", "train.precision=fp32", "train.progress=lines"]  # fmt: skip
BLOCK, HEADER = 32768, 7  # the .wandb file is a LevelDB-style log of protobuf records


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Offline W&B that keeps every file of its own under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


def with_wandb(cfg, **fields):
    train = dataclasses.replace(cfg.train, wandb=dataclasses.replace(cfg.train.wandb, **fields))
    return dataclasses.replace(cfg, train=train)


def wandb_records(path):
    """Every record of a .wandb file: 7-byte header blocks (crc, length, type), records
    split across 32 KiB blocks as FIRST/MIDDLE/LAST chunks, zero padding at block ends."""
    data, pos, chunks = path.read_bytes(), HEADER, b""
    assert data[:4] == b":W&B"
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk, pos = data[pos + HEADER : pos + HEADER + length], pos + HEADER + length
        chunks = chunk if kind in (1, 2) else chunks + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            yield record


def history(run_dir, steps=(), wait_s=30.0):
    """{train/step: {key: value}} of every offline W&B run under RUN_DIR/wandb/, waiting up
    to `wait_s` for `steps`: wandb's service process writes the file, and on a loaded
    machine it can still be writing when `finish()` has returned."""
    deadline = time.monotonic() + wait_s
    rows = read_history(run_dir)
    while not set(steps) <= set(rows) and time.monotonic() < deadline:
        time.sleep(0.25)
        rows = read_history(run_dir)
    return rows


def read_history(run_dir):
    rows = {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                items = record.history.item  # keys with a "/" come as nested_key parts
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                rows[row[STEP_KEY]] = row
    return rows


def test_tiny_run_is_mirrored_and_resumes_the_same_wandb_run(builtin_dir, tmp_path):
    cfg, run = load_config("tiny-cd-flm", SETS), tmp_path / "run"
    sink = WandbSink.build(with_wandb(cfg, project="causeway-test", mode="offline"), run)
    run_training(cfg, run, hooks=[sink])  # cfg has no project: the trainer makes no sink
    sink.close()
    run_id = (run / ID_FILE).read_text().strip()
    (offline,) = run.glob("wandb/offline-run-*")
    assert offline.name.endswith(run_id) and (offline / f"run-{run_id}.wandb").is_file()
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows = history(run, steps=[1, 2, 3, 4])
    assert sorted(rows) == [r["step"] for r in logged] == [1, 2, 3, 4]
    for record in logged:
        assert rows[record["step"]]["loss"] == pytest.approx(record["loss"], rel=1e-12)
        assert rows[record["step"]]["tokens_per_s"] == pytest.approx(record["tokens_per_s"])
    again = WandbSink.build(with_wandb(cfg, project="causeway-test", mode="offline"), run)
    assert again.run.id == run_id  # a requeued job continues the same W&B run
    again.log(5, {"loss": 0.5, "note": "text", "flag": True})
    again.close()
    assert len(list(run.glob("wandb/offline-run-*"))) == 2 and (run / ID_FILE).read_text() == (
        run_id + "\n"
    )
    assert {k: v for k, v in history(run, steps=[5])[5].items() if not k.startswith("_")} == {
        "loss": 0.5, STEP_KEY: 5
    }  # fmt: skip


def test_config_reaches_wandb(tmp_path):
    cfg = with_wandb(load_config("tiny-cd-flm", SETS), project="p", name="named", mode="offline")
    sink = WandbSink.build(cfg, tmp_path)
    assert sink.run.name == "named" and sink.run.config["train"]["steps"] == 4
    assert sink.run.config["model"]["d_model"] == 32
    sink.close()


def test_no_project_no_sink_and_missing_wandb_names_the_extra(tmp_path, monkeypatch):
    cfg = load_config("tiny-cd-flm", SETS)
    assert cfg.train.wandb.project is None and WandbSink.build(cfg, tmp_path) is None
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets uninstalled
    with pytest.raises(ConfigError, match=r"pip install 'causeway\[wandb\]'"):
        WandbSink.build(with_wandb(cfg, project="p"), tmp_path)
