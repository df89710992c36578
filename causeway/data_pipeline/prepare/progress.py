"""The bookkeeping that lets an interrupted `causeway data prepare` skip its finished shards.

`OUT/.prepare-progress/` holds `settings.json` (everything that determines the output: inputs
with sizes and mtimes, tokenizer hash, shard size, seed, ...), `counts.json` (documents and
bad records per input, from the counting pass) and one `unit-NNNNN.json` per input file
listing the shards it has finished (and, once done, how many bad records it skipped). A
shard is renamed into place before it is recorded, so a recorded shard is always complete;
on a re-run with the same settings a unit keeps its recorded shards (if still there with
the recorded size) and writes only the rest.
Different settings make the old progress, and the shards it lists, stale: both are removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from causeway.data_pipeline.shards.index import write_json

PROGRESS_DIR = ".prepare-progress"
SETTINGS = "settings.json"


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def open_progress(out_dir: Path, settings: dict[str, Any]) -> Path:
    """The progress directory for these settings (stale progress and its shards removed)."""
    directory = out_dir / PROGRESS_DIR
    settings = json.loads(json.dumps(settings))  # the form it takes on disk
    if read_json(directory / SETTINGS) != settings:
        discard(out_dir, directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / SETTINGS, settings)
    for partial in out_dir.glob(".*.partial"):
        partial.unlink(missing_ok=True)  # leftovers of a killed run
    return directory


def discard(out_dir: Path, directory: Path) -> None:
    for unit_file in directory.glob("unit-*.json"):
        record = read_json(unit_file) or {}
        for shards in record.get("splits", {}).values():
            for shard in shards:
                (out_dir / shard["name"]).unlink(missing_ok=True)
    for path in directory.glob("*.json"):
        path.unlink()


def unit_path(directory: Path, unit: int) -> Path:
    return directory / f"unit-{unit:05d}.json"


def load_unit(directory: Path, unit: int, out_dir: Path, splits: tuple[str, ...]) -> dict:
    """{"splits": {split: [finished shard entries]}, "done": bool, "bad": int, "first_bad":
    str | None}, keeping per split only the leading shards that are still on disk with their
    recorded size. (A unit recorded without "bad" is from before bad records were skipped:
    it had none.)"""
    record = read_json(unit_path(directory, unit)) or {}
    kept: dict[str, list] = {}
    complete = bool(record.get("done"))
    for split in splits:
        kept[split] = []
        for shard in record.get("splits", {}).get(split, []):
            path = out_dir / shard["name"]
            if not path.is_file() or path.stat().st_size != shard["bytes"]:
                complete = False
                break
            kept[split].append(shard)
    bad, first = (record.get("bad", 0), record.get("first_bad")) if complete else (0, None)
    return {"splits": kept, "done": complete, "bad": bad, "first_bad": first}


def save_unit(directory: Path, unit: int, record: dict) -> None:
    write_json(unit_path(directory, unit), record)
