"""Input patterns: files, directories (every supported file inside, sorted), globs and brace
ranges as bash expands them (`c4-train.{00000..01023}-of-01024.json.gz`, `{a,b}`), in a
deterministic order; a pattern that matches nothing is an error naming it.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path

from causeway.data_pipeline.prepare.inputs import SUFFIXES, input_format


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The files named by `inputs`, in order: a file as it is; a directory: every supported
    file under it (recursively, hidden ones left out), sorted by path; otherwise brace
    patterns (`{a,b}`, `{000..123}`) expanded left to right, then glob patterns (`*`, `?`,
    `[...]`, `**`), each sorted. A pattern that matches nothing is an error naming it."""
    files: list[Path] = []
    for entry in inputs:
        files += _expand(str(entry))
    return files


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        return _directory(path)
    names = expand_braces(pattern)
    files: list[Path] = []
    for name in names:
        origin = f" (from {pattern!r})" if name != pattern else ""
        if Path(name).is_file():
            files.append(Path(name))
        elif Path(name).is_dir():
            files += _directory(Path(name))
        elif _MAGIC.search(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no input file matches {name!r}{origin}")
            for match in matches:
                files += _directory(Path(match)) if Path(match).is_dir() else [Path(match)]
        else:
            raise FileNotFoundError(f"input file not found: {name}{origin}")
    return files


def _directory(directory: Path) -> list[Path]:
    found = [
        p for p in directory.rglob("*")
        if p.is_file() and input_format(p)
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    ]  # fmt: skip
    if not found:
        raise FileNotFoundError(f"{directory}: a directory with no input files ({SUFFIXES})")
    return sorted(found, key=lambda p: p.relative_to(directory).parts)


_MAGIC = re.compile(r"[*?[]")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$|^([a-zA-Z])\.\.([a-zA-Z])$")


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: "a{b,c}d" -> ["abd", "acd"]; "{8..10}" -> 8, 9, 10;
    "{08..10}" -> 08, 09, 10 (a leading zero pads every term to the same width); "{0..9..3}"
    (a step); "{a..c}"; nested and several braces, expanded left to right. A brace with
    neither a top-level comma nor a range is kept as it is."""
    start = 0
    while (open_at := pattern.find("{", start)) >= 0:
        close_at = _closing(pattern, open_at)
        if close_at < 0:
            break
        body = pattern[open_at + 1 : close_at]
        choices = _range(body) or _split_commas(body)
        if choices is None:
            start = open_at + 1
            continue
        head, tail = pattern[:open_at], pattern[close_at + 1 :]
        return [out for choice in choices for out in expand_braces(head + choice + tail)]
    return [pattern]


def _closing(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return -1


def _split_commas(body: str) -> list[str] | None:
    parts, depth, last = [], 0, 0
    for i, char in enumerate(body):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    return [*parts, body[last:]] if parts else None


def _range(body: str) -> list[str] | None:
    match = _RANGE.match(body)
    if match is None:
        return None
    if match.group(4):
        a, b = ord(match.group(4)), ord(match.group(5))
        step = 1 if b >= a else -1
        return [chr(c) for c in range(a, b + step, step)]
    first, last, step_text = match.group(1), match.group(2), match.group(3)
    a, b = int(first), int(last)
    step = abs(int(step_text or 1)) or 1
    padded = any(len(t.lstrip("-")) > 1 and t.lstrip("-").startswith("0") for t in (first, last))
    width = max(len(first), len(last)) if padded else 0
    numbers = range(a, b + 1, step) if b >= a else range(a, b - 1, -step)
    return [f"{n:0{width}d}" for n in numbers]
