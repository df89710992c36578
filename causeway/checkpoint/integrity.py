"""The commit record, and checking a checkpoint against it.

`COMMITTED`, written last by rank 0 (`commit.mark_committed`), is a JSON record of every
other file of the step directory, by path relative to it, with its size and CRC32:

    {
      "format": 1,
      "step": 4,
      "checksum": "crc32",
      "files": {
        ".metadata": {"bytes": 9120, "crc32": "5f3a09c1"},
        "__0_0.distcp": {"bytes": 2283520, "crc32": "0b71e2d4"},
        "config.yaml": {"bytes": 1794, "crc32": "c2d0a8e3"},
        "meta.json": {"bytes": 61, "crc32": "8e0f5a77"}
      }
    }

A checkpoint whose files changed after commit (a truncated or bit-flipped shard) is
refused with `CorruptCheckpoint` naming the file. Sizes are checked at every load (a
`stat` per file); checksums only when asked (`checkpoint.verify: true`, `causeway convert
inspect --verify`), since they read every byte. A marker holding just "N\\n" (written
before commit records) has no file table: such checkpoints load, unchecked.

Cost: CRC32 (zlib) runs at about 4 GB/s on one core, faster than most disks, so building
the record costs about one extra read of the checkpoint by rank 0 at commit (from the
page cache for files just written on its node); `mark_committed` fsyncs each file as it
reads it. CRC32 catches every burst error up to 32 bits and other damage with odds of
2^-32 of missing it: it detects corruption, not tampering.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path

from causeway.checkpoint.ranks import all_gather, rank_and_world

COMMIT_MARKER = "COMMITTED"
RECORD_FORMAT = 1
CHECKSUM = "crc32"
CHUNK = 8 << 20

log = logging.getLogger("causeway.checkpoint")


class CorruptCheckpoint(ValueError):
    """A committed checkpoint whose files no longer match its commit record."""


def corrupt(checkpoint: Path, problem: str) -> CorruptCheckpoint:
    return CorruptCheckpoint(f"checkpoint {checkpoint} is corrupt: {problem}")


def file_checksum(path: Path, fsync: bool = False) -> tuple[int, str]:
    """(bytes, CRC32 as 8 hex digits) of one file, read in chunks; fsynced when asked."""
    crc, size = 0, 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        if fsync:
            os.fsync(handle.fileno())
        while n := handle.readinto(buffer):
            crc = zlib.crc32(view[:n], crc)
            size += n
    return size, f"{crc:08x}"


def record_files(checkpoint: Path) -> list[str]:
    """Every file of the step directory but the marker (and its temporary), sorted."""
    skip = {COMMIT_MARKER, COMMIT_MARKER + ".tmp"}
    return sorted(
        p.relative_to(checkpoint).as_posix()
        for p in checkpoint.rglob("*")
        if p.is_file() and p.relative_to(checkpoint).as_posix() not in skip
    )


def record_text(record: dict) -> str:
    """JSON with one line per file, readable with `cat`."""
    files = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in record["files"].items()]
    head = {k: v for k, v in record.items() if k != "files"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    return "{\n" + "\n".join(lines) + '\n  "files": {\n' + ",\n".join(files) + "\n  }\n}\n"


def write_record(checkpoint: Path, step: int) -> dict:
    """Read and fsync every file, then write COMMITTED: to a temporary name, fsynced, then
    renamed (and the directory fsynced), so that the marker appears whole or not at all."""
    checkpoint = Path(checkpoint)
    files = {}
    for name in record_files(checkpoint):
        size, crc = file_checksum(checkpoint / name, fsync=True)
        files[name] = {"bytes": size, CHECKSUM: crc}
    record = {"format": RECORD_FORMAT, "step": step, "checksum": CHECKSUM, "files": files}
    tmp = checkpoint / (COMMIT_MARKER + ".tmp")
    with tmp.open("w") as handle:
        handle.write(record_text(record))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, checkpoint / COMMIT_MARKER)
    directory = os.open(checkpoint, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return record


def read_record(checkpoint: Path) -> dict | None:
    """The commit record; None without a marker or for an old one ("N\\n": no file table)."""
    marker = Path(checkpoint) / COMMIT_MARKER
    if not marker.is_file():
        return None
    text = marker.read_text()
    if text.strip() == "" or text.strip().isdigit():
        return None
    try:
        record = json.loads(text)
        if not isinstance(record.get("files"), dict):
            raise ValueError("no file table")
    except ValueError as err:
        raise corrupt(checkpoint, f"{COMMIT_MARKER} is not a commit record ({err})") from None
    if record.get("checksum", CHECKSUM) != CHECKSUM:
        raise ValueError(f"{marker}: unknown checksum {record['checksum']!r}")
    return record


def check_sizes(checkpoint: Path) -> dict | None:
    """Cheap (a stat per file): every file of the record is there with its size at commit.
    Returns the record (None when the checkpoint has none: nothing to check)."""
    checkpoint = Path(checkpoint)
    record = read_record(checkpoint)
    if record is None:
        return None
    for name, entry in record["files"].items():
        try:
            size = (checkpoint / name).stat().st_size
        except FileNotFoundError:
            missing = f"{name} is missing ({entry['bytes']} bytes at commit)"
            raise corrupt(checkpoint, missing) from None
        if size != entry["bytes"]:
            raise corrupt(checkpoint, f"{name} is {size} bytes, {entry['bytes']} at commit")
    return record


def verify_checksums(checkpoint: Path, rank: int = 0, world: int = 1) -> tuple[int, int] | None:
    """Sizes of every file, then the checksums of this rank's share of them (every
    `world`-th file from `rank`; all of them by default). Returns (files, bytes) read, or
    None when the checkpoint has no record."""
    checkpoint = Path(checkpoint)
    record = check_sizes(checkpoint)
    if record is None:
        return None
    names = sorted(record["files"])[rank::world]
    total = 0
    for name in names:
        size, crc = file_checksum(checkpoint / name)
        if crc != record["files"][name][CHECKSUM]:
            want = record["files"][name][CHECKSUM]
            raise corrupt(checkpoint, f"{name} has CRC32 {crc}, {want} at commit")
        total += size
    return len(names), total


def check_intact(checkpoint: Path, verify: bool = False) -> None:
    """Sizes; with `verify`, the checksums too, the files split over the ranks and the
    first error raised on every rank (a collective under a process group)."""
    if not verify:
        check_sizes(checkpoint)
        return
    error = None
    try:
        if verify_checksums(checkpoint, *rank_and_world()) is None:
            log.warning("checkpoint %s has no file table (an older marker): unchecked", checkpoint)
    except (OSError, ValueError) as err:  # every rank must reach the gather
        error = err
    errors = [e for e in all_gather(None if error is None else str(error)) if e]
    if error is not None:
        raise error
    if errors:
        raise CorruptCheckpoint(errors[0])


def set_aside(checkpoint: Path) -> Path:
    """Rename a corrupt step_N to step_N.corrupt (discovery and pruning skip it; the files
    stay for inspection) and return the new path."""
    checkpoint = Path(checkpoint)
    target, n = checkpoint.with_name(checkpoint.name + ".corrupt"), 1
    while target.exists():
        n += 1
        target = checkpoint.with_name(f"{checkpoint.name}.corrupt{n}")
    checkpoint.rename(target)
    log.warning("resume: moved the corrupt checkpoint %s aside to %s (kept for inspection; "
                "nothing deletes it)", checkpoint, target.name)  # fmt: skip
    return target
