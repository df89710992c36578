"""The worker processes of a stream with `num_workers` > 0, watched so that a death is seen.

Each worker has a pipe of its own, whose only write end it holds, and the parent waits on that
pipe and on the process's sentinel together. A worker that dies (SIGKILL from the out-of-memory
killer, a crash in native code) is therefore noticed at once, even halfway through sending a
batch (the pipe then ends early), from any thread and without signal handlers. (DataLoader's
workers share one result queue: a worker killed in the middle of a large batch leaves half a
message in it, and the parent waits for the rest forever.) The caller restarts a dead worker
from its readers' state (workers.py); the `board`, shared memory the worker's walks write the
shard and sample they are reading into, lets the report name what the worker was reading.

Workers ignore stop signals (the trainer reads on until its stop checkpoint, then closes them)
and exit by themselves once the parent is gone. Workers still running when the interpreter
exits are killed first: multiprocessing would send them SIGTERM, which they ignore, and wait.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.util  # noqa: F401 (its exit hook must run after ours: import it first)
import os
import queue
import signal
import threading
import traceback
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from causeway.data_pipeline.stream.reader import StreamSpec

_SLOT = 2  # board entries per (reader, source): shard, sample
_LIVE: weakref.WeakSet[WorkerProcess] = weakref.WeakSet()


class LoaderWorkerDied(RuntimeError):
    """A data worker process died again and again without the stream getting a batch."""

    def __init__(self, message: str, death: Death) -> None:
        super().__init__(message)
        self.death = death


@dataclass
class Death:
    """A worker that is gone: which, its pid and exit code (-N: killed by signal N)."""

    worker: int
    pid: int | None
    exitcode: int | None

    @property
    def signal_name(self) -> str | None:
        if self.exitcode is None or self.exitcode >= 0:
            return None
        try:
            return signal.Signals(-self.exitcode).name
        except ValueError:
            return f"signal {-self.exitcode}"

    def cause(self) -> str:
        name = self.signal_name
        if name == "SIGKILL":
            return "killed by signal SIGKILL (the out-of-memory killer sends it: see dmesg)"
        if name is not None:
            return f"killed by signal {name}"
        if self.exitcode is None:
            return "closed its pipe while still running"
        return f"exited with code {self.exitcode}"


class WorkerDied(Exception):
    """Raised by `WorkerProcess.receive` when the worker is gone; carries the `Death`."""

    def __init__(self, death: Death) -> None:
        super().__init__(f"worker {death.worker} {death.cause()}")
        self.death = death


@dataclass
class Failure:
    """An exception raised in a worker, sent to the parent to be raised there."""

    error: BaseException
    text: str

    def raise_it(self, worker: int, pid: int | None) -> None:
        self.error.add_note(f"raised in data worker {worker} (pid {pid}):\n{self.text}")
        raise self.error


class WorkerProcess:
    """One worker process: it runs `group` (an iterable of batch parts, rebuilt in the child)
    and sends its items in order; `receive` returns the next one or raises `WorkerDied`."""

    def __init__(self, group: Iterable, worker: int, board_size: int, prefetch: int) -> None:
        ctx = multiprocessing.get_context()
        self.worker = worker
        self.board = ctx.RawArray("q", [-1] * board_size)
        read, write = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_worker_main, args=(group, write, self.board, max(prefetch, 1), os.getpid()),
            name=f"causeway-data-worker-{worker}", daemon=True,
        )  # fmt: skip
        self.process.start()
        write.close()  # the worker holds the only write end: its death ends the pipe
        self.conn = read
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def receive(self) -> Any:
        conn, sentinel = self.conn, self.process.sentinel
        ready = multiprocessing.connection.wait([conn, sentinel])
        if conn in ready:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                item = None  # died, possibly in the middle of a message
            if isinstance(item, Failure):
                item.raise_it(self.worker, self.pid)
            if item is not None:
                return item
        raise WorkerDied(self._death())

    def reading(self) -> list[tuple[int, int]]:
        """(shard, sample) per board entry, as the worker's walks last wrote them."""
        values = list(self.board)
        return [(values[i], values[i + 1]) for i in range(0, len(values), _SLOT)]

    def _death(self) -> Death:
        self.process.join(timeout=5)
        if self.process.exitcode is None:  # the pipe ended but the process lives on
            self.process.kill()
            self.process.join()
            return Death(self.worker, self.pid, None)
        return Death(self.worker, self.pid, self.process.exitcode)

    def close(self) -> None:
        """Stop the worker (it keeps nothing that must be saved: its state is the parent's)."""
        _LIVE.discard(self)
        self.conn.close()
        if self.process.exitcode is None:
            with contextlib.suppress(OSError, ValueError):
                self.process.kill()
        with contextlib.suppress(OSError, ValueError, AssertionError):
            self.process.join()


def board_size(spec: StreamSpec, readers: int) -> int:
    return readers * len(spec.datas) * _SLOT


def watch_walks(readers: Iterable, board: Any) -> None:
    """Make the walks of `readers` (this worker's) write what they read into the board."""
    for k, reader in enumerate(readers):
        for s, walk in enumerate(reader.walks):
            walk.watch = _Post(board, (k * len(reader.walks) + s) * _SLOT)


class _Post:
    def __init__(self, board: Any, at: int) -> None:
        self.board, self.at = board, at

    def __call__(self, shard: int, sample: int) -> None:
        self.board[self.at], self.board[self.at + 1] = shard, sample


# -- in the worker ----------------------------------------------------------------------------


def _worker_main(group: Iterable, conn: Any, board: Any, prefetch: int, parent: int) -> None:
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_IGN)  # see the module docstring
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # not a handler inherited from the parent
    for sibling in list(_LIVE):  # forked: the parent's ends of the other workers' pipes
        sibling.conn.close()
    _LIVE.clear()
    group.board = board
    items: queue.Queue = queue.Queue(maxsize=prefetch)
    sender = threading.Thread(target=_send_all, args=(items, conn), daemon=True)
    sender.start()
    try:
        for item in group:
            _put(items, item, parent)
    except BaseException as error:  # noqa: BLE001 (every failure goes to the parent)
        _put(items, Failure(error, traceback.format_exc()), parent)
    sender.join()


def _put(items: queue.Queue, item: Any, parent: int) -> None:
    while True:
        try:
            items.put(item, timeout=1.0)
            return
        except queue.Full:
            if os.getppid() != parent:
                os._exit(0)  # the parent is gone


def _send_all(items: queue.Queue, conn: Any) -> None:
    while True:
        item = items.get()
        try:
            conn.send(item)
        except OSError:
            os._exit(0)  # the parent closed the pipe or is gone
        except Exception as error:  # noqa: BLE001 (an item or error that does not pickle)
            text = "".join(traceback.format_exception(error))
            item = Failure(RuntimeError(f"cannot send to the parent: {error}"), text)
            conn.send(item)
        if isinstance(item, Failure):
            return


@atexit.register
def _stop_all() -> None:
    for worker in list(_LIVE):
        worker.close()
