"""Whether a step's update is applied: every rank decides the same, before the optimizer.

A step whose loss or gradient norm is not finite is skipped (and so is a loss spike,
when the guard is on): the optimizer does not run, so weights and optimizer state stay
bit for bit as they were. Both figures are already job-wide (all-reduced) on every
rank, so every rank reaches the same verdict. `train.max_bad_steps` skipped steps in a
row stop the run with `TooManyBadSteps`.

The verdict needs the figures on the host: one read of three numbers per step, which
also carries the stop-signal agreement (`StopSignals`), so a distributed run reads back
no more than it did without the guard. A single process without a guard reads nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist

from causeway.config.schema import TrainConfig
from causeway.models.loss import LossSums
from causeway.train.failures import TooManyBadSteps
from causeway.train.faults import Faults
from causeway.train.stop import StopSignals


@dataclass(frozen=True)
class Verdict:
    apply: bool
    reason: str | None  # why the step was skipped
    signal: int  # a stop signal some rank received (0: none), the same on every rank


class StepGuard:
    """The trainer's `step.StepGate`: judges each step, counts the skipped ones, and
    injects the test faults (`faults.py`) of the step it is told of (`begin`)."""

    def __init__(
        self, cfg: TrainConfig, stop: StopSignals, device: torch.device, faults: Faults
    ) -> None:
        self.max_bad, self.window, self.spike_z = cfg.max_bad_steps, cfg.spike_window, cfg.spike_z
        self.stop, self.device, self.faults = stop, device, faults
        self.step, self.verdict = 0, Verdict(True, None, 0)
        self.recent: deque[float] = deque(maxlen=self.window or None)
        self.in_a_row: list[tuple[int, str]] = []
        self.skipped = 0
        self.distributed = dist.is_initialized() and dist.get_world_size() > 1

    @property
    def reads(self) -> bool:
        """Whether judging a step reads from the device (a host synchronisation)."""
        return self.distributed or self.max_bad > 0 or self.window > 0

    def state_dict(self) -> dict:
        """What a checkpoint keeps (the same on every rank): a resumed run counts on and
        judges spikes against the losses before the save."""
        recent = torch.tensor(list(self.recent), dtype=torch.float64)
        return {"skipped": torch.tensor(self.skipped), "recent": recent}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state["skipped"])
        self.recent.clear()
        self.recent.extend(state["recent"].tolist()[-self.window :] if self.window else [])

    def begin(self, step: int) -> None:
        self.step = step

    def after_backward(self, parameters: list[torch.Tensor], sums: LossSums) -> LossSums:
        if not self.faults:
            return sums
        return sums._replace(ce=self.faults.spoil_step(self.step, parameters, sums.ce))

    def allow(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether the optimizer applies this step (the same answer on every rank)."""
        self.verdict = self.judge(self.step, loss, grad_norm)
        return self.verdict.apply

    def judge(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> Verdict:
        if not self.reads:
            return Verdict(True, None, self.stop.received)
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        on = self.device if dist.is_initialized() and dist.get_backend() == "nccl" else "cpu"
        signal = torch.tensor(float(self.stop.received), dtype=torch.float64, device=on)
        flags = torch.stack([signal, (~finite).double().to(on), loss.double().nan_to_num().to(on)])
        if self.distributed:  # the stop agreement; the other two are equal on every rank
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        signum, nonfinite, value = flags.tolist()
        reason = self.reason(bool(nonfinite), value)
        self.count(step, reason, None if nonfinite else value)
        return Verdict(reason is None, reason, int(signum))

    def reason(self, nonfinite: bool, loss: float) -> str | None:
        if nonfinite and self.max_bad > 0:
            return "non-finite loss or gradient norm"
        if self.window and len(self.recent) == self.window:
            mean = sum(self.recent) / self.window
            std = math.sqrt(sum((x - mean) ** 2 for x in self.recent) / self.window)
            z = (loss - mean) / std if std > 0 else 0.0
            if z > self.spike_z:
                return f"loss spike {loss:.4g}, z-score {z:.1f} > train.spike_z={self.spike_z}"
        return None

    def count(self, step: int, reason: str | None, loss: float | None) -> None:
        if reason is None:
            self.in_a_row = []
            if self.window and loss is not None:
                self.recent.append(loss)
            return
        self.skipped += 1
        self.in_a_row.append((step, reason))
        if len(self.in_a_row) >= self.max_bad > 0:
            steps, reasons = zip(*self.in_a_row, strict=True)
            raise TooManyBadSteps(list(steps), list(reasons), self.max_bad)
