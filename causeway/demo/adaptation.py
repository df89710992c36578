"""`causeway demo adaptation`: the paper's pipeline at tiny scale on the builtin corpus.

Pretrain CD:FLM and ND:MLM on the same token budget; LM-adapt ND:MLM into CD:FLM and
non-causal-MLM-adapt CD:FLM into ND:MLM (`convert arch`, then train); multitask-finetune
each of the four on the builtin prompted tasks; evaluate all eight checkpoints zero-shot
on the held-out builtin tasks and by validation loss. Each stage records itself in
OUT/stages/ when done, so a second run after an interruption redoes nothing finished
(and an interrupted training resumes from its newest checkpoint). The report
(`report.py`) goes into OUT/report.md with two PNG plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    pretrain_steps: int = 600
    adapt_steps: int = 200
    mtf_steps: int = 200
    examples_per_task: int = 100
    eval_batch_size: int = 32
    sets: tuple[str, ...] = ()  # overrides for every training run (a smaller model, say)


# The smallest pipeline that exercises every stage (CI runs it).
SMOKE = Settings(4, 2, 2, 6, 32, ("model.n_layers=1", "model.d_model=64", "model.d_ff=128",
                                  "train.log_every=1"))  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One training run: `recipe` for `steps`, from `start` (a run's name) when given."""

    name: str
    recipe: str
    steps: int
    stage: str  # pretrain | adapt | mtf
    start: str | None = None
    convert: dict | None = None  # convert arch arguments before training (adaptation)


@dataclass
class Pipeline:
    out: Path
    settings: Settings
    say: Callable[[str], None] = print
    done: dict[str, dict] = field(default_factory=dict)

    def runs(self) -> list[Run]:
        s = self.settings
        first = [
            Run("CD:FLM", "tiny-cd-flm", s.pretrain_steps, "pretrain"),
            Run("ND:MLM", "tiny-nd-mlm", s.pretrain_steps, "pretrain"),
            Run("ND:MLM -> CD:FLM", "tiny-cd-flm", s.adapt_steps, "adapt", "ND:MLM",
                {"visibility": "causal", "objective": "full_lm"}),
            Run("CD:FLM -> ND:MLM", "tiny-nd-mlm", s.adapt_steps, "adapt", "CD:FLM",
                {"visibility": "prefix", "objective": "span_corruption"}),
        ]  # fmt: skip
        mtf = [
            Run(f"{r.name} + MTF", "tiny-mtf-cd" if r.recipe == "tiny-cd-flm" else "tiny-mtf-nd",
                s.mtf_steps, "mtf", r.name)
            for r in first
        ]  # fmt: skip
        return first + mtf

    def run_dir(self, name: str) -> Path:
        slug = name.replace(" -> ", "-to-").replace(" + ", "-").replace(":", "-").lower()
        return self.out / "runs" / slug

    def stage(self, key: str, work: Callable[[], dict]) -> dict:
        record = self.out / "stages" / f"{key}.json"
        if record.is_file():
            self.done[key] = json.loads(record.read_text())
            self.say(f"  {key}: done before, kept")
            return self.done[key]
        began = time.perf_counter()
        result = {**work(), "seconds": round(time.perf_counter() - began, 1)}
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = record.with_suffix(".partial")
        partial.write_text(json.dumps(result, indent=2) + "\n")
        partial.rename(record)
        self.done[key] = result
        self.say(f"  {key}: {result['seconds']} s")
        return result

    def execute(self) -> Path:
        from causeway.data_pipeline.prepare.builtin_tasks import write_heldout_tasks
        from causeway.demo.report import write_report

        began = time.perf_counter()
        runs = self.runs()
        tasks = self.out / "tasks"
        self.stage("tasks", lambda: {"dir": str(write_heldout_tasks(
            tasks, self.settings.examples_per_task))})  # fmt: skip
        for i, run in enumerate(runs, start=1):
            self.say(f"[{i}/{len(runs) * 2}] train {run.name} ({run.stage}, {run.steps} steps)")
            self.stage(f"train {run.name}", lambda run=run: self.train(run))
        for i, run in enumerate(runs, start=len(runs) + 1):
            self.say(f"[{i}/{len(runs) * 2}] evaluate {run.name}")
            self.stage(f"eval {run.name}", lambda run=run: self.evaluate(run, tasks))
        report = write_report(self.out, runs, self.done, self.run_dir)
        self.say(f"causeway: the demo took {time.perf_counter() - began:.0f} s (this run); "
                 f"report: {report}")  # fmt: skip
        return report

    def checkpoint(self, name: str) -> Path:
        from causeway.checkpoint.discovery import newest_committed

        return newest_committed(self.run_dir(name))

    def train(self, run: Run) -> dict:
        from causeway.config import load_config
        from causeway.convert.arch import convert_arch
        from causeway.train.trainer import run_training

        sets = [*self.settings.sets, f"train.steps={run.steps}", "checkpoint.resume=auto",
                f"checkpoint.every={max(1, run.steps // 4)}", "checkpoint.keep=1"]  # fmt: skip
        if run.start is not None:
            start = self.checkpoint(run.start)
            if run.convert is not None:
                converted = self.run_dir(run.name).with_name(self.run_dir(run.name).name + "-init")
                if not converted.is_dir():
                    convert_arch(start, run.convert["visibility"], run.convert["objective"],
                                 converted)  # fmt: skip
                start = converted
            sets.append(f"checkpoint.init_from={start}")
        records = run_training(load_config(run.recipe, sets), self.run_dir(run.name))
        return {"run_dir": str(self.run_dir(run.name)), "steps": run.steps,
                "final_loss": records[-1]["loss"] if records else None}  # fmt: skip

    def evaluate(self, run: Run, tasks: Path) -> dict:
        from causeway.evaluation.heldout import heldout_loss
        from causeway.evaluation.tasks import load_task, task_files
        from causeway.evaluation.zero_shot import zero_shot
        from causeway.inference.loading import load_inference_model

        ckpt = self.checkpoint(run.name)
        loaded = load_inference_model(ckpt, "auto")
        suite = [load_task(p) for p in task_files([tasks])]
        report = zero_shot(loaded, suite, self.settings.eval_batch_size)
        loss = heldout_loss(ckpt, device="auto", model=loaded.model)
        return {"checkpoint": str(ckpt), "zero_shot": report.record(), "val_loss": loss}


def run_demo(out: str | Path, settings: Settings = Settings()) -> Path:
    """Run (or continue) the demo in `out`; a directory made with other settings is refused
    (its finished stages would not be these)."""
    from causeway.config import ConfigError

    out = Path(out)
    wanted = json.dumps(asdict(settings), indent=2) + "\n"
    saved = out / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(wanted):
        raise ConfigError(f"--out {out} holds a demo with other settings ({saved}): continue "
                          "it with the same ones or choose a new directory")  # fmt: skip
    if not saved.is_file() and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty and holds no demo: choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(wanted)
    return Pipeline(out, settings).execute()
