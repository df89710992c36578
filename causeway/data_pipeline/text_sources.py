"""Reading raw text records from .jsonl, .txt and .parquet files, with errors that point at them.

A record is a tuple of strings, one per requested field: `("text",)` for plain pretraining
data, `("inputs", "targets")` for mtf pairs. Every record comes with a location string
("file:line" or "file:row") used in error messages.

.txt files hold one document per blank-line-separated block (a paragraph or more of prose);
one document per line would cut prose into sentence-sized scraps. Inner newlines are kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

Record = tuple[str, ...]
SUFFIXES = (".jsonl", ".txt", ".parquet")


def iter_records(path: str | Path, fields: Sequence[str]) -> Iterator[tuple[str, Record]]:
    """(location, record) for each document of `path`, chosen by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.suffix == ".jsonl":
        return _iter_jsonl(path, fields)
    if path.suffix == ".txt":
        if len(fields) != 1:
            raise ValueError(f"{path}: .txt files hold plain text, not the fields {list(fields)}")
        return _iter_txt(path)
    if path.suffix == ".parquet":
        return _iter_parquet(path, fields)
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected one of {SUFFIXES}")


def _iter_jsonl(path: Path, fields: Sequence[str]) -> Iterator[tuple[str, Record]]:
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, tuple(_field(obj, name, where) for name in fields)


def _field(obj: dict, name: str, where: str) -> str:
    if name not in obj:
        raise ValueError(f"{where}: no field {name!r} (fields: {sorted(obj)})")
    value = obj[name]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} is {type(value).__name__}, expected a string")
    return value


def _iter_txt(path: Path) -> Iterator[tuple[str, Record]]:
    block: list[str] = []
    start = 0
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if line.strip():
                start = start or line_number
                block.append(line.rstrip("\n"))
            elif block:
                yield f"{path}:{start}", ("\n".join(block),)
                block, start = [], 0
    if block:
        yield f"{path}:{start}", ("\n".join(block),)


def _iter_parquet(path: Path, fields: Sequence[str]) -> Iterator[tuple[str, Record]]:
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
            for name, value in zip(fields, record, strict=True):
                if not isinstance(value, str):
                    raise ValueError(
                        f"{where}: column {name!r} is {type(value).__name__}, expected a string"
                    )
            yield where, tuple(record)
            row += 1
