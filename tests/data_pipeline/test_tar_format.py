from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from webdataset import TarWriter
from webdataset.tariterators import tarfile_samples

from causeway.data_pipeline.shards.tar_reader import TarSamples
from causeway.data_pipeline.shards.tar_writer import RECORD, TarShardWriter, archive_bytes


def _write(path: Path, members: list[tuple[str, bytes]]) -> tuple[int, str]:
    writer = TarShardWriter(path)
    for name, data in members:
        writer.add(name, data)
    return writer.close()


MEMBERS = [
    ("000000000.tokens.u16", b"\x01\x00\x02\x00"),
    ("000000001.inputs.u16", b"\x03\x00"),
    ("000000001.targets.u16", b"\x04\x00" * 300),  # spans two blocks
    ("000000002.tokens.u16", b""),
]


def _read_all(stream, name: str = "x", **kwargs) -> tuple[list, object]:
    reader = TarSamples(stream, name, **kwargs)
    samples, error = reader.read(100, 1 << 30)
    return [(s.index, s.key, {k: bytes(v) for k, v in s.fields.items()}) for s in samples], error


def test_written_shards_are_ordinary_tar_files(tmp_path: Path) -> None:
    path = tmp_path / "s.tar"
    size, digest = _write(path, MEMBERS)
    data = path.read_bytes()
    members = sum(512 + -(-len(d) // 512) * 512 for _, d in MEMBERS)
    assert size == len(data) == archive_bytes(members)
    assert size % RECORD == 0 and digest == hashlib.sha256(data).hexdigest()
    with tarfile.open(path) as archive:
        members = archive.getmembers()
        assert [(m.name, archive.extractfile(m).read()) for m in members] == MEMBERS
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}
    samples = list(tarfile_samples([{"url": str(path)}]))
    assert [s["__key__"] for s in samples] == ["000000000", "000000001", "000000002"]
    assert samples[1]["targets.u16"] == MEMBERS[2][1]


def test_reader_groups_members_into_samples_like_webdataset(tmp_path: Path) -> None:
    _write(tmp_path / "s.tar", MEMBERS)
    samples, error = _read_all(io.BytesIO((tmp_path / "s.tar").read_bytes()))
    assert error is None
    assert samples == [
        (0, "000000000", {"tokens.u16": MEMBERS[0][1]}),
        (1, "000000001", {"inputs.u16": MEMBERS[1][1], "targets.u16": MEMBERS[2][1]}),
        (2, "000000002", {"tokens.u16": b""}),
    ]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_reader_reads_what_tarfile_and_webdataset_write(fmt: int) -> None:
    """pax headers (webdataset's TarWriter adds one per member), GNU long names, ustar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in [("d/" + "k" * 120 + ".txt", b"long"), ("short.txt", b"s")]:
            if fmt == tarfile.USTAR_FORMAT:
                name = name.replace("k" * 120, "k" * 20)
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5
            archive.addfile(info, io.BytesIO(data))
    samples, error = _read_all(io.BytesIO(buffer.getvalue()))
    assert error is None
    assert [s[2] for s in samples] == [{"txt": b"long"}, {"txt": b"s"}]
    assert samples[0][1].startswith("d/kkkk")

    buffer = io.BytesIO()
    writer = TarWriter(buffer, encoder=False, mtime=0.0)
    writer.write({"__key__": "a", "tokens.u16": b"\x05\x00"})
    writer.close()
    assert _read_all(io.BytesIO(buffer.getvalue()))[0] == [(0, "a", {"tokens.u16": b"\x05\x00"})]


def test_truncated_stream_keeps_the_complete_samples(tmp_path: Path) -> None:
    members = [(f"{i:09d}.tokens.u16", bytes(1000)) for i in range(5)]
    _write(tmp_path / "s.tar", members)
    data = (tmp_path / "s.tar").read_bytes()
    cut = 3 * (512 + 1024) + 700  # inside the data of the fourth member
    samples, error = _read_all(io.BytesIO(data[:cut]), "s.tar")
    assert [s[0] for s in samples] == [0, 1, 2]
    assert error is not None and "truncated" in str(error) and "s.tar" in str(error)


def test_corrupt_header_is_caught_by_its_checksum(tmp_path: Path) -> None:
    members = [(f"{i:09d}.tokens.u16", bytes(10)) for i in range(6)]
    _write(tmp_path / "s.tar", members)
    data = bytearray((tmp_path / "s.tar").read_bytes())
    data[4 * 1024 + 3] ^= 0x01  # a name byte of the fifth header: still parses, checksum fails
    samples, error = _read_all(io.BytesIO(bytes(data)), "s.tar")
    assert [s[0] for s in samples] == [0, 1, 2, 3]
    assert error is not None and "checksum" in str(error)


def test_skip_and_hash(tmp_path: Path) -> None:
    members = [(f"{i:09d}.tokens.u16", bytes([i]) * 10) for i in range(20)]
    _, digest = _write(tmp_path / "s.tar", members)
    stream = io.BytesIO((tmp_path / "s.tar").read_bytes())
    reader = TarSamples(stream, "s", hash_bytes=True)
    assert reader.skip(13) is None
    samples, _ = reader.read(3, 1 << 30)
    assert [s.index for s in samples] == [13, 14, 15]
    assert bytes(samples[0].fields["tokens.u16"]) == bytes([13]) * 10
    assert reader.hexdigest() == digest
