"""Where datasets and shards live: local paths, `pipe:` commands and http(s) URLs.

Opening goes through webdataset's `gopen`, which runs `pipe:` commands in a shell and fetches
http(s) with curl (`-f`, so a 404 is an error rather than an HTML page); local files are opened
unbuffered because the tar reader does its own 4 MiB reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

REMOTE_PREFIXES = ("http://", "https://")


def is_remote(location: str) -> bool:
    return location.startswith(REMOTE_PREFIXES)


def is_local(location: str) -> bool:
    """A plain path (or file: URL), as opposed to an http(s) URL or a `pipe:` command."""
    return (
        not is_remote(location)
        and not location.startswith("pipe:")
        and "://" not in (location.removeprefix("file://"))
    )


def local_path(location: str) -> str:
    return location.removeprefix("file://").removeprefix("file:")


def join(base: str, name: str) -> str:
    """`name` inside the dataset location `base` (a directory path or a URL prefix)."""
    if is_remote(base):
        return base.rstrip("/") + "/" + name
    return os.path.join(local_path(base), name)


def shard_url(base: str, name: str, template: str | None) -> str:
    """The URL of shard `name`: `template` with {name} filled in, else `name` inside `base`.

    Templates reach shards a plain join cannot, e.g. "pipe:aws s3 cp s3://bucket/web/{name} -"
    or "pipe:cat /mnt/web/{name}".
    """
    if template is None:
        return join(base, name)
    if "{name}" not in template:
        raise ValueError(f"shard URL template {template!r} has no {{name}} placeholder")
    return template.replace("{name}", name)


def open_url(url: str) -> BinaryIO:
    """A readable binary stream for a local path, a `pipe:` command or an http(s) URL."""
    if is_local(url):
        return open(local_path(url), "rb", buffering=0)  # noqa: SIM115 (caller closes)
    from webdataset.gopen import gopen

    return gopen(url, "rb")


def read_bytes(url: str) -> bytes:
    """The whole content at `url`; errors name it."""
    if is_local(url):
        return Path(local_path(url)).read_bytes()
    stream = open_url(url)
    try:
        chunks = []
        while chunk := stream.read(1 << 20):
            chunks.append(chunk)
        stream.close()
    except OSError as e:
        raise FileNotFoundError(f"cannot read {url}: {e}") from None
    return b"".join(chunks)


def exists(url: str) -> bool | None:
    """True/False for local paths; None (unknown without fetching) for anything else."""
    return os.path.isfile(local_path(url)) if is_local(url) else None
