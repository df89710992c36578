"""Faults injected on purpose, for the reliability tests (tests/reliability/).

Nothing here is active unless the environment variable CAUSEWAY_TEST_FAULTS names a
fault, and a run that has one prints so on its first line. The value is a comma-separated
list of `KIND@STEP` or `KIND@STEP:RANK` (without a rank: every rank):

    nan_loss       the step's loss becomes NaN after the backward
    inf_grad       one gradient entry becomes +inf after the backward
    kill_in_save   SIGKILL this process in the save of STEP, once its shards are written
                   (with checkpoint.async_save: while they are being written), before
                   the commit marker
    stall_in_save  at the same point, write RUN_DIR/fault_reached and wait to be killed

e.g. CAUSEWAY_TEST_FAULTS="nan_loss@3,inf_grad@4:1,kill_in_save@4:1".
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ENV = "CAUSEWAY_TEST_FAULTS"
KINDS = ("nan_loss", "inf_grad", "kill_in_save", "stall_in_save")
REACHED = "fault_reached"


@dataclass(frozen=True)
class Fault:
    kind: str
    step: int
    rank: int | None  # None: every rank


def parse_faults(text: str) -> list[Fault]:
    faults = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, where = item.partition("@")
        step, _, rank = where.partition(":")
        if kind not in KINDS or not step.isdigit() or (rank and not rank.isdigit()):
            raise ValueError(f"{ENV}: {item!r} is not KIND@STEP[:RANK] with KIND in {KINDS}")
        faults.append(Fault(kind, int(step), int(rank) if rank else None))
    return faults


class Faults:
    """The faults this rank is to inject; empty (and free) unless CAUSEWAY_TEST_FAULTS."""

    def __init__(self, faults: list[Fault], rank: int) -> None:
        self.faults = [f for f in faults if f.rank is None or f.rank == rank]

    @classmethod
    def from_env(cls, rank: int) -> Faults:
        return cls(parse_faults(os.environ.get(ENV, "")), rank)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def due(self, kind: str, step: int) -> bool:
        return any(f.kind == kind and f.step == step for f in self.faults)

    def spoil_step(self, step: int, parameters, loss: torch.Tensor) -> torch.Tensor:
        """Called after the backward: returns the (maybe NaN) loss; may poison a gradient."""
        if self.due("inf_grad", step):
            grad = next(p.grad for p in parameters if p.grad is not None)
            local = grad.to_local() if hasattr(grad, "to_local") else grad
            local.view(-1)[0] = float("inf")
        if self.due("nan_loss", step):
            loss = loss * float("nan")
        return loss

    def in_save(self, step: int, run_dir: Path) -> None:
        """Called between a rank's shards and the commit of step `step`."""
        if self.due("stall_in_save", step):
            (Path(run_dir) / REACHED).write_text(f"{step}\n")
            while True:
                time.sleep(1)
        if self.due("kill_in_save", step):
            os.kill(os.getpid(), signal.SIGKILL)
