"""One harness for distributed tests: spawn N CPU processes with gloo on 127.0.0.1.

`run_distributed("package.module:function", world_size, *args)` starts N processes with
torchrun's environment variables set, calls the function in each and returns what each
rank returned (JSON-serialisable), or raises with the failing ranks' tracebacks.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import tempfile
import traceback
from pathlib import Path

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, target: str, args: tuple, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
    )  # fmt: skip
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    result_file = Path(out) / f"rank{rank}.json"
    try:
        module, name = target.split(":")
        result = getattr(importlib.import_module(module), name)(*args)
        result_file.write_text(json.dumps({"ok": True, "result": result}))
    except Exception:
        result_file.write_text(json.dumps({"ok": False, "error": traceback.format_exc()}))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(target: str, world_size: int, *args) -> list:
    with tempfile.TemporaryDirectory() as out:
        port = free_port()
        try:
            mp.start_processes(
                _worker, args=(world_size, port, target, args, out), nprocs=world_size,
                start_method="spawn",
            )  # fmt: skip
        except mp.ProcessRaisedException as err:
            errors = [
                f"rank {r}: {json.loads(p.read_text())['error']}"
                for r, p in enumerate(sorted(Path(out).glob("rank*.json")))
                if not json.loads(p.read_text())["ok"]
            ]
            raise RuntimeError("\n".join(errors) or str(err)) from err
        files = sorted(Path(out).glob("rank*.json"), key=lambda p: int(p.stem[4:]))
        return [json.loads(p.read_text())["result"] for p in files]
