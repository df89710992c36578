"""Writing tar shards with fixed-layout ustar headers, a running sha256 and an exact byte count.

webdataset's TarWriter goes through `tarfile` and costs about 45 us per sample, a fifth of the
time it takes to tokenize a short document; preparation must run near the tokenizer's own
speed, so headers are built here from a template (about 2 us). The output is an ordinary ustar
archive (what `tarfile` writes with `format=USTAR_FORMAT`): webdataset, `tarfile` and GNU tar
read it. mtime, uid and gid are 0 so that equal input gives byte-identical shards.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOCK = 512
# tarfile pads archives to 20 blocks, like GNU tar; keep that so sizes match other writers.
RECORD = 20 * BLOCK
END_OF_ARCHIVE = 2 * BLOCK
FLUSH_BYTES = 1 << 20
_CHECKSUM = slice(148, 156)


def _template() -> bytearray:
    header = bytearray(BLOCK)
    header[100:108] = b"0000644\0"  # mode
    header[108:116] = b"0000000\0"  # uid
    header[116:124] = b"0000000\0"  # gid
    header[136:148] = b"00000000000\0"  # mtime
    header[_CHECKSUM] = b" " * 8  # counted as spaces while summing
    header[156:157] = b"0"  # regular file
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[329:337] = b"0000000\0"  # devmajor
    header[337:345] = b"0000000\0"  # devminor
    return header


_TEMPLATE = bytes(_template())
_TEMPLATE_SUM = sum(_TEMPLATE)


def header(name: str, size: int) -> bytes:
    """The 512-byte ustar header of a regular file `name` of `size` bytes."""
    encoded = name.encode("utf-8")
    if len(encoded) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    size_field = b"%011o\0" % size
    if len(size_field) != 12:
        raise ValueError(f"tar member {name!r} too large: {size} bytes")
    block = bytearray(_TEMPLATE)
    block[0 : len(encoded)] = encoded
    block[124:136] = size_field
    checksum = _TEMPLATE_SUM + sum(encoded) + sum(size_field)
    block[_CHECKSUM] = b"%06o\0 " % checksum
    return bytes(block)


def member_bytes(size: int) -> int:
    """Bytes a member of `size` data bytes takes in the archive (header + padded data)."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def archive_bytes(members_bytes: int) -> int:
    """Final archive size once the end-of-archive blocks and record padding are added."""
    return -(-(members_bytes + END_OF_ARCHIVE) // RECORD) * RECORD


class TarShardWriter:
    """One tar file being written; `close` returns (size in bytes, sha256 hex digest)."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._sha = hashlib.sha256()
        self._pending = bytearray()
        self.members_bytes = 0

    def add(self, name: str, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        self._pending += header(name, size)
        self._pending += data
        padding = -size % BLOCK
        if padding:
            self._pending += bytes(padding)
        self.members_bytes += member_bytes(size)
        if len(self._pending) >= FLUSH_BYTES:
            self._flush()

    def close(self, sync: bool = True) -> tuple[int, str]:
        total = archive_bytes(self.members_bytes)
        self._pending += bytes(total - self.members_bytes)
        self._flush()
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._file.close()
        return total, self._sha.hexdigest()

    def abort(self) -> None:
        self._file.close()

    def _flush(self) -> None:
        self._sha.update(self._pending)
        self._file.write(self._pending)
        self._pending = bytearray()
