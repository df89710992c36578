"""Reading raw text records from input files, with errors that point at them.

A record is a tuple of strings, one per requested field: `("text",)` for plain pretraining
data, `("inputs", "targets")` for mtf pairs. Every record comes with a location string
("file:line", "file:row N" or "file:member") used in messages.

Formats, by the end of the file name:

- JSON lines (one object per line): `.jsonl` and `.json`, plain or compressed (`.jsonl.gz`,
  `.json.gz`, `.jsonl.zst`, `.json.zst`), as C4, the Pile and Dolma ship them. Compressed
  files are decompressed as a stream; a truncated or corrupt one is an error naming it.
- `.txt` (also `.txt.gz`, `.txt.zst`): one document per blank-line-separated block (a
  paragraph or more of prose; one document per line would cut prose into sentence-sized
  scraps). Inner newlines are kept.
- `.parquet` (needs pyarrow).
- `.tar`: webdataset shards of text samples (members `KEY.EXT`, consecutive members with one
  KEY form a sample): a sample's `txt` member is its text; without one, its `json` member is
  an object holding the fields, as a JSON line would.

A *bad record* (a line that is not valid UTF-8 or JSON, not an object, lacks a field or has a
non-string one; a member likewise) is reported to `on_bad(location, reason)` and skipped; with
no `on_bad` it is a ValueError "location: reason". Problems with a whole file (unsupported
type, missing parquet column, truncated stream) are always errors.

`patterns.expand_inputs` turns command-line inputs (files, directories, globs, brace patterns)
into the deterministic list of files read here.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

Record = tuple[str, ...]
OnBad = Callable[[str, str], None]
JSON_LINES = (".jsonl", ".json")
COMPRESSED = (".gz", ".zst")
SUFFIXES = (
    *JSON_LINES,
    *(s + c for s in JSON_LINES for c in COMPRESSED),
    ".txt", ".txt.gz", ".txt.zst", ".parquet", ".tar",
)  # fmt: skip
_BY_LENGTH = sorted(SUFFIXES, key=len, reverse=True)
_READ_SIZE = 1 << 16


def input_format(path: str | Path) -> str | None:
    """The supported suffix `path` ends with (".jsonl.gz", ".tar", ...), or None."""
    name = Path(path).name.lower()
    return next((s for s in _BY_LENGTH if name.endswith(s)), None)


def check_input(path: str | Path, fields: Sequence[str]) -> str:
    """The format of `path`, or the error reading it would end in (before anything is read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    suffix = input_format(path)
    if suffix is None:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; expected one of {SUFFIXES}"
        )
    if suffix.startswith(".txt") and len(fields) != 1:
        raise ValueError(f"{path}: .txt files hold plain text, not the fields {list(fields)}")
    return suffix


def iter_records(
    path: str | Path, fields: Sequence[str], on_bad: OnBad | None = None
) -> Iterator[tuple[str, Record]]:
    """(location, record) for each document of `path`, chosen by its suffix."""
    path = Path(path)
    suffix = check_input(path, fields)
    bad = on_bad or _raise
    if suffix == ".parquet":
        return _iter_parquet(path, fields, bad)
    if suffix == ".tar":
        return _iter_tar(path, fields, bad)
    if suffix.startswith(".txt"):
        return _iter_txt(path)
    return _iter_json_lines(path, fields, bad)


def _raise(where: str, reason: str) -> None:
    raise ValueError(f"{where}: {reason}")


# --- streams -------------------------------------------------------------------------------


@contextmanager
def open_stream(path: Path) -> Iterator[BinaryIO]:
    """The bytes of `path`, decompressed as a stream by its suffix (.gz, .zst); errors from a
    truncated or corrupt stream become a ValueError naming the file."""
    name = path.name.lower()
    with open(path, "rb") as raw:
        if name.endswith(".gz"):
            stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb")
        elif name.endswith(".zst"):
            stream = io.BufferedReader(_ZstdReader(raw), buffer_size=1 << 20)  # type: ignore[arg-type]
        else:
            stream = raw
        try:
            yield stream
        except (EOFError, zlib.error, gzip.BadGzipFile, tarfile.ReadError, _Corrupt) as e:
            raise ValueError(f"{path}: truncated or corrupt file ({e})") from None
        finally:
            if stream is not raw:
                stream.close()  # the decompressor; `raw` closes with the `with`


class _Corrupt(Exception):
    """A zstd stream that cannot be decompressed or ends inside a frame."""


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a zstd file, one frame after another (files written in parallel
    hold many), streamed. zstandard's `stream_reader` ends quietly where a truncated file
    ends; this reader makes a file that ends inside a frame an error."""

    def __init__(self, raw: BinaryIO) -> None:
        try:
            import zstandard
        except ImportError:
            raise ImportError(
                f"reading {getattr(raw, 'name', 'a .zst file')} needs zstandard: "
                "pip install zstandard"
            ) from None
        self._raw = raw
        self._error = zstandard.ZstdError
        self._context = zstandard.ZstdDecompressor(max_window_size=2**31)  # zstd --long=31
        self._frame = self._context.decompressobj()
        self._in_frame = False
        self._pending = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending and not self._ended:
            self._fill()
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _fill(self) -> None:
        data = self._raw.read(_READ_SIZE)
        if not data:
            if self._in_frame:
                raise _Corrupt("the zstd stream ends inside a frame")
            self._ended = True
            return
        out = []
        while data:
            try:
                out.append(self._frame.decompress(data))
            except self._error as e:
                raise _Corrupt(f"zstd: {e}") from None
            self._in_frame = True
            data = b""
            if self._frame.eof:
                data = self._frame.unused_data
                self._frame = self._context.decompressobj()
                self._in_frame = False
        self._pending = memoryview(b"".join(out))


# --- JSON lines and text -------------------------------------------------------------------


def _iter_json_lines(path: Path, fields: Sequence[str], bad: OnBad) -> Iterator[tuple[str, Record]]:
    first = True
    with open_stream(path) as stream:
        for line_number, raw in enumerate(stream, start=1):
            where = f"{path}:{line_number}"
            try:
                line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                bad(where, f"not valid UTF-8 (byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if first and line.strip() in ("[", "{", "[{"):
                    raise ValueError(
                        f"{path}: one JSON document spread over lines, not JSON lines "
                        "(one object per line; convert with `jq -c '.[]'`)"
                    ) from None
                bad(where, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            finally:
                first = False
            record = _pick(obj, fields)
            if isinstance(record, str):
                bad(where, record)
            else:
                yield where, record


def _pick(obj: object, fields: Sequence[str]) -> Record | str:
    """The fields of a parsed JSON value, or why they cannot be taken from it."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    values = []
    for name in fields:
        if name not in obj:
            return f"no field {name!r} (fields: {sorted(obj)})"
        value = obj[name]
        if not isinstance(value, str):
            return f"field {name!r} is {type(value).__name__}, expected a string"
        values.append(value)
    return tuple(values)


def _iter_txt(path: Path) -> Iterator[tuple[str, Record]]:
    block: list[str] = []
    start = line_number = 0
    with open_stream(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8")  # universal newlines, as open()
        try:
            for line_number, line in enumerate(text, start=1):
                if line.strip():
                    start = start or line_number
                    block.append(line.rstrip("\n"))
                elif block:
                    yield f"{path}:{start}", ("\n".join(block),)
                    block, start = [], 0
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not valid UTF-8 after line {line_number} ({e})") from None
        finally:
            text.detach()
    if block:
        yield f"{path}:{start}", ("\n".join(block),)


# --- parquet and webdataset tar ------------------------------------------------------------


def _iter_parquet(path: Path, fields: Sequence[str], bad: OnBad) -> Iterator[tuple[str, Record]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading {path} needs pyarrow: pip install pyarrow (or causeway[parquet])"
        ) from None
    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    missing = [name for name in fields if name not in columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (columns: {columns})")
    row = 0
    for batch in parquet.iter_batches(columns=list(fields)):
        values = [batch.column(name).to_pylist() for name in fields]
        for record in zip(*values, strict=True):
            where = f"{path}:row {row}"
            row += 1
            wrong = [(n, v) for n, v in zip(fields, record, strict=True) if not isinstance(v, str)]
            if wrong:
                name, value = wrong[0]
                bad(where, f"column {name!r} is {type(value).__name__}, expected a string")
                continue
            yield where, tuple(record)


_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # KEY.EXT, as webdataset splits names


def _iter_tar(path: Path, fields: Sequence[str], bad: OnBad) -> Iterator[tuple[str, Record]]:
    """Samples of a webdataset tar, streamed: only `txt` and `json` members are read."""
    key: str | None = None
    sample: dict[str, tuple[str, bytes]] = {}
    with open_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            match = _MEMBER.match(member.name) if member.isfile() else None
            if match is None:
                continue
            if match.group(1) != key:
                if key is not None:
                    yield from _tar_sample(path, key, sample, fields, bad)
                key, sample = match.group(1), {}
            ext = match.group(2).lower()
            data = tar.extractfile(member) if ext in ("txt", "json") else None
            sample[ext] = (member.name, data.read() if data else b"")  # others: only named
        if key is not None:
            yield from _tar_sample(path, key, sample, fields, bad)


def _tar_sample(
    path: Path, key: str, sample: dict[str, tuple[str, bytes]], fields: Sequence[str], bad: OnBad
) -> Iterator[tuple[str, Record]]:
    ext = "txt" if "txt" in sample and len(fields) == 1 else "json"
    if ext not in sample:
        wanted = "txt or json member" if len(fields) == 1 else f"json member (for {fields})"
        bad(f"{path}:{key}", f"sample has no {wanted} (members: {sorted(sample)})")
        return
    name, data = sample[ext]
    where = f"{path}:{name}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad(where, f"not valid UTF-8 (byte {e.start})")
        return
    if ext == "txt":
        yield where, (text,)
        return
    try:
        record = _pick(json.loads(text), fields)
    except json.JSONDecodeError as e:
        record = f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    if isinstance(record, str):
        bad(where, record)
    else:
        yield where, record


# --- expanding inputs ----------------------------------------------------------------------
