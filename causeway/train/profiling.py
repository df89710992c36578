"""`train.profile_steps: [FIRST, LAST]`: a torch profiler trace of those steps, inclusive,
in RUN_DIR/profile/trace_rank{R}.json (Chrome trace format: chrome://tracing or
Perfetto), and on GPUs a CUDA memory snapshot, memory_rank{R}.pickle (drag it into
pytorch.org/memory_viz). Hold the trace's matmuls, collectives and idle gaps against the
parts of `causeway plan`'s step-time estimate."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


class StepProfiler:
    def __init__(self, steps: list[int], run_dir: Path, rank: int, device: torch.device):
        self.first, self.last = (steps[0], steps[1]) if steps else (0, -1)
        self.out = Path(run_dir) / "profile"
        self.rank, self.cuda = rank, device.type == "cuda"
        self.active: profile | None = None

    def before(self, step: int) -> None:
        if step != self.first:
            return
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.active = profile(activities=activities, record_shapes=True, profile_memory=True)
        if self.cuda:
            torch.cuda.memory._record_memory_history(max_entries=200_000)
        self.active.start()

    def after(self, step: int) -> None:
        if self.active is not None and step >= self.last:
            self.finish()

    def finish(self) -> None:
        """Stop and write; also called when the run ends before LAST (a stop signal)."""
        if self.active is None:
            return
        self.active.stop()
        self.out.mkdir(parents=True, exist_ok=True)
        self.active.export_chrome_trace(str(self.out / f"trace_rank{self.rank}.json"))
        if self.cuda:
            torch.cuda.memory._dump_snapshot(str(self.out / f"memory_rank{self.rank}.pickle"))
            torch.cuda.memory._record_memory_history(enabled=None)
        self.active = None
        if self.rank == 0:
            print(f"causeway: profile of steps {self.first}-{self.last} in {self.out}", flush=True)
