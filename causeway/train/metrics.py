"""Where training figures go: metrics.jsonl, TensorBoard, and the terminal.

On an interactive terminal a progress bar shows the latest figures; elsewhere (CI, a
Slurm log) each logged step is one plain line, which greps and diffs well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class MetricsLogger:
    def __init__(self, run_dir: Path, total_steps: int, progress: str = "auto"):
        from torch.utils.tensorboard import SummaryWriter

        self.jsonl = (run_dir / "metrics.jsonl").open("a")
        self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.total_steps = total_steps
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        self.bar = None
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, dynamic_ncols=True, desc="train")

    def log(self, step: int, figures: dict[str, Any]) -> None:
        record = {"step": step, **figures}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for key, value in figures.items():
            if isinstance(value, int | float):
                self.tensorboard.add_scalar(key, value, step)
        self.show(step, figures)

    def show(self, step: int, figures: dict[str, Any]) -> None:
        line = format_line(figures)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(line, refresh=True)
        else:
            print(f"step {step}/{self.total_steps} | {line}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.tensorboard.close()
        self.jsonl.close()


HIDDEN = ("flops_per_token", "val_tokens")


ALARMS = ("data/bad_samples", "data/bad_shards", "data/missing_shards", "data/sha256_mismatches")


def is_alarm(key: str, value: Any) -> bool:
    """Data counters stay in metrics.jsonl; the terminal shows only bad-data ones, if any."""
    return key in ALARMS and bool(value)


def format_line(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if key in HIDDEN or (key.startswith("data/") and not is_alarm(key, value)):
            continue
        if isinstance(value, float):
            if key == "lr" or abs(value) < 1e-2:
                text = f"{value:.3e}"
            elif abs(value) >= 1000:
                text = f"{value:,.0f}"
            else:
                text = f"{value:.4g}"
        else:
            text = str(value)
        parts.append(f"{key} {text}")
    return " | ".join(parts)
