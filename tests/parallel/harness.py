"""One harness for distributed tests: N CPU processes with gloo on 127.0.0.1.

`run_distributed("package.module:function", world_size, *args)` calls the function in each
of N processes, with torchrun's environment variables set, and returns what each rank
returned, or raises with the failing ranks' tracebacks.

The processes are kept between calls (one pool per world size, spawned on first use):
starting N Python processes and importing torch costs seconds on a small machine, more
than most cases. Each call gets a fresh rendezvous port and process group (destroyed
after it) and the environment as it was; a failure, a dead process or a call that runs
past its timeout kills the pool, and the next call starts a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import socket
import time
import traceback
from multiprocessing.connection import wait

import torch.multiprocessing as mp

CALL_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(rank: int, world_size: int, conn) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    while True:
        try:
            port, environ, target, args = conn.recv()
        except EOFError:  # the test process is gone
            return
        # The caller's environment of now (a test may have set a variable since the spawn).
        os.environ.clear()
        os.environ.update(environ)
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
            LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
        )  # fmt: skip
        try:
            module, name = target.split(":")
            reply = (True, getattr(importlib.import_module(module), name)(*args))
        except Exception:
            reply = (False, traceback.format_exc())
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        conn.send(reply)


class Pool:
    def __init__(self, world_size: int) -> None:
        context = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for rank in range(world_size):
            parent, child = context.Pipe()
            # Not daemonic, so that a case may start processes of its own (data workers);
            # the pools are closed at exit instead (`close_pools`).
            proc = context.Process(target=_serve, args=(rank, world_size, child))
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, target: str, args: tuple, timeout: float) -> list:
        port = free_port()
        environ = dict(os.environ)
        for conn in self.conns:
            conn.send((port, environ, target, args))
        results: dict[int, object] = {}
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        pending = set(range(len(self.conns)))
        while pending:
            waiting = [self.conns[r] for r in pending] + [self.procs[r].sentinel for r in pending]
            ready = wait(waiting, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"{target}: ranks {sorted(pending)} still running after "
                                   f"{timeout:.0f} s")  # fmt: skip
            for rank in list(pending):
                if self.conns[rank] in ready:
                    ok, value = self.conns[rank].recv()
                    pending.discard(rank)
                    if ok:
                        results[rank] = value
                    else:
                        errors.append(f"rank {rank}: {value}")
                elif self.procs[rank].sentinel in ready:
                    pending.discard(rank)
                    errors.append(f"rank {rank}: exited with {self.procs[rank].exitcode}")
            if errors:  # the others may wait forever in a collective: give them a moment
                ready = wait([self.conns[r] for r in pending], timeout=2.0)
                for rank in pending:
                    if self.conns[rank] in ready:
                        ok, value = self.conns[rank].recv()
                        if not ok:
                            errors.append(f"rank {rank}: {value}")
                raise RuntimeError("\n".join(errors))
        return [results[r] for r in range(len(self.conns))]

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        for proc in self.procs:
            proc.join(timeout=10)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()


_POOLS: dict[int, Pool] = {}


@atexit.register
def close_pools() -> None:
    while _POOLS:
        _POOLS.popitem()[1].close()


def run_distributed(target: str, world_size: int, *args, timeout: float = CALL_TIMEOUT_S) -> list:
    pool = _POOLS.get(world_size)
    if pool is None:
        pool = _POOLS[world_size] = Pool(world_size)
    try:
        return pool.run(target, args, timeout)
    except BaseException:
        _POOLS.pop(world_size).close()
        raise
