"""The training run: set-up for any layout, then a short loop with logging hooks."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from causeway.checkpoint.discovery import newest_committed, resolve_checkpoint
from causeway.checkpoint.manager import Checkpointer
from causeway.checkpoint.ranks import barrier
from causeway.checkpoint.weights import load_model_weights
from causeway.config import RunConfig, save_config
from causeway.data_pipeline.stream import LoaderWorkerDied
from causeway.models.flops import count_parameters, flops_per_sequence
from causeway.parallel.apply import ParallelModel, parallelize
from causeway.parallel.dims import ParallelDims
from causeway.train.data import TrainData, build_data
from causeway.train.distributed import DistEnv, init_distributed
from causeway.train.failures import (
    DataWorkersFailed,
    SaveFailed,
    TrainingFailed,
    is_peer_failure,
    peer_failure,
    with_checkpoint,
)
from causeway.train.faults import ENV, Faults
from causeway.train.guard import StepGuard
from causeway.train.metrics import MetricsLogger
from causeway.train.optim import build_optimizer, build_scheduler
from causeway.train.profiling import StepProfiler
from causeway.train.step import StepFigures, StepResult, StepSettings, evaluate, train_step
from causeway.train.stop import StopSignals, TrainingStopped, signal_name, write_stop_record
from causeway.train.wandb_sink import WandbSink


def default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_parallel_model(cfg: RunConfig, env: DistEnv) -> ParallelModel:
    dims = ParallelDims.from_config(cfg, env.world_size)
    meshes = dims.build_mesh(env.device.type) if dims.parallel else None
    torch.manual_seed(cfg.train.seed)
    pm = parallelize(cfg, dims, meshes, env.device)
    if cfg.checkpoint.init_from:
        source = resolve_checkpoint(cfg.checkpoint.init_from)
        verify = cfg.checkpoint.verify
        load_model_weights(source, pm.parts, whole_model=dims.pp == 1, verify=verify)
    return pm


class TrainerHook(Protocol):
    """Optional callbacks, called on every rank at the same steps (either may be absent):
    `on_log(step, figures)` at each logged step and `on_checkpoint(step, path)` once a
    checkpoint is committed. The Ray launcher reports both to Ray Train."""

    def on_log(self, step: int, figures: dict) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...


@dataclass
class Trainer:
    cfg: RunConfig
    run_dir: Path
    hooks: Sequence[TrainerHook] = ()

    def setup(self) -> None:
        cfg = self.cfg
        # First, so that a stop signal during set-up is not fatal: the run stops after
        # its first step, with a checkpoint.
        self.stop = StopSignals(cfg.train.stop_signals)
        t = cfg.train
        self.env = init_distributed(t.device, t.collective_timeout_s, self.run_dir / "flight")
        self.faults = Faults.from_env(self.env.rank)
        self.guard = StepGuard(t, self.stop, self.env.device, self.faults)
        self.pm = build_parallel_model(cfg, self.env)
        # Each data-parallel rank reads only its share; tp/pp peers read the same rows.
        self.data: TrainData = build_data(cfg, self.pm.local_rank("dp"), self.pm.dims.dp)
        self.optimizer = build_optimizer(cfg.optimizer, list(self.pm.parameters()))
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.train.steps)
        # After the layout, which fills in data.micro_batch_size when it is unset.
        self.settings = StepSettings.from_config(cfg, self.env.device)
        d = cfg.data
        if cfg.model.arch == "decoder":
            lengths = (d.seq_len,)
        else:
            lengths = (d.inputs_length, d.targets_length)
        # Per token of the row (both sides for encoder-decoders), as tokens/s counts them.
        self.flops_per_token = flops_per_sequence(cfg.model, *lengths) / sum(lengths)
        layout = {"world_size": self.env.world_size, **self.pm.dims.sizes}
        self.checkpointer = Checkpointer(
            cfg, self.run_dir, self.pm, self.optimizer, self.data.stream, {"layout": layout},
            self.faults or None, self.guard,
        )  # fmt: skip
        self.start_step = self.checkpointer.resume()
        if os.environ.get(ENV) and self.env.is_main:
            print(f"causeway: TEST FAULTS ACTIVE ({ENV}={os.environ[ENV]})", flush=True)
        for _ in range(self.start_step):  # the schedule is a function of the step
            self.scheduler.step()
        self.metrics = None
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            record_attempt(self.run_dir, cfg, self.start_step, self.env.world_size)
            self.metrics = MetricsLogger(self.run_dir, cfg.train.steps, cfg.train.progress)
        self.profiler = StepProfiler(t.profile_steps, self.run_dir, self.env.rank, self.env.device)
        self.wandb = WandbSink.build(cfg, self.run_dir)  # None unless train.wandb.project
        if self.wandb is not None:
            self.hooks = [*self.hooks, self.wandb]

    def fit(self) -> list[dict]:
        """Run every step; returns the logged records (also in metrics.jsonl).

        When a stop signal reached any rank, every rank saves the step they agreed on
        and `TrainingStopped` is raised once the checkpoint is committed. A fault the
        run cannot go on from raises a `failures.TrainingFailed` naming the newest
        committed checkpoint, after any pending save is finished."""
        try:
            return self.loop()
        except (TrainingFailed, LoaderWorkerDied) as error:
            self.close_after_failure()
            if isinstance(error, LoaderWorkerDied):
                error = DataWorkersFailed(f"data.num_workers: {error}")
            raise with_checkpoint(error, newest_committed(self.run_dir, warn=False)) from None
        except RuntimeError as error:  # DistBackendError is one
            if not is_peer_failure(error):
                raise
            self.close_after_failure()
            timeout = self.cfg.train.collective_timeout_s
            raise peer_failure(error, timeout, self.env.rank) from None
        finally:
            self.stop.restore()

    def loop(self) -> list[dict]:
        t = self.cfg.train
        self.announce()
        records, window_tokens, window_start = [], 0, time.perf_counter()
        stopped = (0, 0)  # (step, signal) once the ranks agree to stop
        for step in range(self.start_step + 1, t.steps + 1):
            lr = self.scheduler.get_last_lr()[0]
            self.profiler.before(step)
            result = self.step(step, next(self.data.train))
            self.profiler.after(step)
            window_tokens += result.tokens
            figures = None
            if step % t.log_every == 0 or step == t.steps:
                # Only logged steps read their figures back: this waits for the
                # device, so the window's time includes its steps' device work.
                done = result.materialize()
                elapsed = time.perf_counter() - window_start
                figures = self.step_figures(done, lr, window_tokens / elapsed)
                window_tokens, window_start = 0, time.perf_counter()
            if t.eval_every and (step % t.eval_every == 0 or step == t.steps):
                figures = {**(figures or {}), **self.validate()}
            if figures is not None:
                records.append({"step": step, **figures})
                self.log(step, figures)
            # One process reads its own flag: a signal during this step's logging counts.
            signum = self.guard.verdict.signal or (
                not self.guard.distributed and self.stop.received
            )
            if signum and step < t.steps:
                self.save(step)
                stopped = (step, signum)
                break
            if self.due_for_checkpoint(step):
                self.save(step, periodic=True)
            self.poll_checkpoint()
        else:
            if self.start_step < t.steps:
                self.save(t.steps)
        self.close()
        if stopped[0]:
            self.report_stop(*stopped)
        return records

    def step(self, step: int, batch: dict) -> StepResult:
        """One optimizer step; its figures stay on the device until `materialize`."""
        self.guard.begin(step)
        result = train_step(self.pm, self.optimizer, batch, self.settings, self.guard)
        self.scheduler.step()  # a skipped step still counts: the schedule follows the data
        if not result.applied and self.env.is_main:
            reason, count = self.guard.verdict.reason, self.guard.skipped
            print(f"causeway: step {step} skipped: {reason} ({count} skipped)", flush=True)
        return result

    def due_for_checkpoint(self, step: int) -> bool:
        every = self.cfg.checkpoint.every
        return bool(every) and step % every == 0 and step != self.cfg.train.steps

    def save(self, step: int, periodic: bool = False) -> None:
        """A periodic save that fails goes on under checkpoint.on_save_error: continue;
        the final and the stop checkpoint must be saved."""
        try:
            self.checkpointer.save(step)
        except SaveFailed as error:
            self.save_failed(error, periodic)
        self.notify_committed()

    def poll_checkpoint(self) -> None:
        try:
            self.checkpointer.poll()
        except SaveFailed as error:
            self.save_failed(error, periodic=True)

    def save_failed(self, error: SaveFailed, periodic: bool) -> None:
        if not periodic or self.cfg.checkpoint.on_save_error == "stop":
            raise error
        if self.env.is_main:
            newest = newest_committed(self.run_dir, warn=False)
            print(f"causeway: {error}; training goes on (newest committed: {newest})")

    def notify_committed(self) -> None:
        """Tell the hooks of every checkpoint committed by now. Called only right after a
        save or at the end, which every rank reaches at the same step."""
        for step, path in self.checkpointer.take_committed():
            for hook in self.hooks:
                if hasattr(hook, "on_checkpoint"):
                    hook.on_checkpoint(step, path)

    def log(self, step: int, figures: dict) -> None:
        if self.metrics is not None:
            self.metrics.log(step, figures)
        for hook in self.hooks:
            if hasattr(hook, "on_log"):
                hook.on_log(step, figures)

    def close_after_failure(self) -> None:
        """Finish what can be finished (a pending save of a good step) before failing."""
        with contextlib.suppress(SaveFailed, RuntimeError):
            self.checkpointer.wait()
        self.checkpointer.pending = None
        self.close()

    def close(self) -> None:
        self.profiler.finish()
        self.checkpointer.wait()
        self.notify_committed()
        self.data.stream.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.wandb is not None:
            self.wandb.close()

    def report_stop(self, step: int, signum: int) -> None:
        reason = signal_name(signum)
        if self.env.is_main:
            write_stop_record(self.run_dir, step, reason)
            print(f"causeway: {reason} received: saved step {step}, exiting", flush=True)
        # No rank exits before the record exists: under srun --kill-on-bad-exit the first
        # exit ends the step, and the job script reads the record to decide on a requeue.
        barrier()
        raise TrainingStopped(step, reason)

    def announce(self) -> None:
        if self.env.is_main:
            dims = self.pm.dims
            layout = " ".join(f"{k}={v}" for k, v in dims.sizes.items() if v > 1) or "1 process"
            parameters = self.cfg_parameters()
            print(f"causeway: {parameters:,} parameters, {layout}, run dir {self.run_dir}")

    def cfg_parameters(self) -> int:
        from causeway.models import build_model

        return count_parameters(build_model(self.cfg.model, "meta"))

    def step_figures(self, result: StepFigures, lr: float, tokens_per_s: float) -> dict:
        figures = {
            "loss": result.loss,
            "lr": lr,
            "grad_norm": result.grad_norm,
            "tokens_per_s": round(tokens_per_s, 1),
            "flops_per_token": self.flops_per_token,
        }
        peak = self.cfg.train.peak_tflops * 1e12 * self.env.world_size
        if peak:
            figures["mfu"] = self.flops_per_token * tokens_per_s / peak
        if self.cfg.train.z_loss:
            figures["z_loss"] = result.z_loss
        figures["skipped_steps"] = self.guard.skipped
        # Every rank reads the global stream, so rank 0's counters are the job's.
        figures.update(self.data.stream.metrics())
        return figures

    def validate(self) -> dict[str, float]:
        batches = self.data.validation(self.cfg.train.eval_batches)
        return evaluate(self.pm, batches, self.settings)


def record_attempt(run_dir: Path, cfg: RunConfig, start_step: int, world_size: int) -> None:
    """One line per start of the run in attempts.jsonl: `causeway status` counts restarts
    and Slurm requeues from it."""
    env = os.environ
    record = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "start_step": start_step,
        "world_size": world_size,
        "launcher": cfg.launch.launcher,
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
    }
    with (run_dir / "attempts.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")


def run_training(
    cfg: RunConfig, run_dir: Path | None = None, hooks: Sequence[TrainerHook] = ()
) -> list[dict]:
    run_dir = Path(run_dir or cfg.run_dir or default_run_dir(cfg))
    cfg.run_dir = str(run_dir)
    trainer = Trainer(cfg, run_dir, hooks)
    trainer.setup()
    return trainer.fit()
