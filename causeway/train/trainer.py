"""The training run: set-up for any layout, then a short loop with logging hooks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from causeway.checkpoint.final import load_model_weights
from causeway.checkpoint.manager import Checkpointer
from causeway.config import RunConfig, save_config
from causeway.models.flops import count_parameters, flops_per_sequence
from causeway.parallel.apply import ParallelModel, parallelize
from causeway.parallel.dims import ParallelDims
from causeway.train.data import TrainData, build_data
from causeway.train.distributed import DistEnv, init_distributed
from causeway.train.metrics import MetricsLogger
from causeway.train.optim import build_optimizer, build_scheduler
from causeway.train.step import evaluate, train_step


def default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_parallel_model(cfg: RunConfig, env: DistEnv) -> ParallelModel:
    dims = ParallelDims.from_config(cfg, env.world_size)
    mesh = dims.build_mesh(env.device.type) if dims.parallel else None
    torch.manual_seed(cfg.train.seed)
    pm = parallelize(cfg, dims, mesh, env.device)
    if cfg.checkpoint.init_from:
        from causeway.convert.checkpoints import resolve_checkpoint

        source = resolve_checkpoint(cfg.checkpoint.init_from)
        load_model_weights(source, pm.parts, whole_model=dims.pp == 1)
    return pm


@dataclass
class Trainer:
    cfg: RunConfig
    run_dir: Path

    def setup(self) -> None:
        cfg = self.cfg
        self.env = init_distributed(cfg.train.device)
        self.data: TrainData = build_data(cfg)
        self.pm = build_parallel_model(cfg, self.env)
        self.optimizer = build_optimizer(cfg.optimizer, list(self.pm.parameters()))
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.train.steps)
        d = cfg.data
        if cfg.model.arch == "decoder":
            lengths = (d.seq_len,)
        else:
            lengths = (d.inputs_length, d.targets_length)
        # Per token of the row (both sides for encoder-decoders), as tokens/s counts them.
        self.flops_per_token = flops_per_sequence(cfg.model, *lengths) / sum(lengths)
        layout = {"world_size": self.env.world_size, **self.pm.dims.sizes}
        self.checkpointer = Checkpointer(
            cfg, self.run_dir, self.pm, self.optimizer, self.data.stream, {"layout": layout}
        )
        self.start_step = self.checkpointer.resume()
        for _ in range(self.start_step):  # the schedule is a function of the step
            self.scheduler.step()
        self.metrics = None
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            self.metrics = MetricsLogger(self.run_dir, cfg.train.steps, cfg.train.progress)

    def fit(self) -> list[dict]:
        """Run every step; returns the logged records (also in metrics.jsonl)."""
        cfg, t = self.cfg, self.cfg.train
        self.announce()
        records, window_tokens, window_start = [], 0, time.perf_counter()
        every = cfg.checkpoint.every
        for step in range(self.start_step + 1, t.steps + 1):
            result = train_step(
                self.pm, self.optimizer, next(self.data.train),
                arch=cfg.model.arch, micro_batch_size=cfg.data.micro_batch_size,
                z_loss=t.z_loss, grad_clip=t.grad_clip, precision=t.precision,
                device=self.env.device,
            )  # fmt: skip
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            window_tokens += result.tokens
            figures = None
            if step % t.log_every == 0 or step == t.steps:
                elapsed = time.perf_counter() - window_start
                figures = self.step_figures(result, lr, window_tokens / elapsed)
                window_tokens, window_start = 0, time.perf_counter()
            if t.eval_every and (step % t.eval_every == 0 or step == t.steps):
                figures = {**(figures or {}), **self.validate()}
            if figures is not None:
                records.append({"step": step, **figures})
                if self.metrics is not None:
                    self.metrics.log(step, figures)
            if every and step % every == 0 and step != t.steps:
                self.checkpointer.save(step)
            self.checkpointer.poll()
        if self.start_step < t.steps:
            self.checkpointer.save(t.steps)
        self.checkpointer.wait()
        self.data.stream.close()
        if self.metrics is not None:
            self.metrics.close()
        return records

    def announce(self) -> None:
        if self.env.is_main:
            dims = self.pm.dims
            layout = " ".join(f"{k}={v}" for k, v in dims.sizes.items() if v > 1) or "1 process"
            parameters = self.cfg_parameters()
            print(f"causeway: {parameters:,} parameters, {layout}, run dir {self.run_dir}")

    def cfg_parameters(self) -> int:
        from causeway.models import build_model

        return count_parameters(build_model(self.cfg.model, "meta"))

    def step_figures(self, result, lr: float, tokens_per_s: float) -> dict:
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
        # Every rank reads the global stream, so rank 0's counters are the job's.
        figures.update(self.data.stream.metrics())
        return figures

    def validate(self) -> dict[str, float]:
        batches = self.data.validation(self.cfg.train.eval_batches)
        t = self.cfg.train
        return evaluate(self.pm, batches, self.cfg.model.arch, t.precision, self.env.device)


def run_training(cfg: RunConfig, run_dir: Path | None = None) -> list[dict]:
    run_dir = Path(run_dir or cfg.run_dir or default_run_dir(cfg))
    cfg.run_dir = str(run_dir)
    trainer = Trainer(cfg, run_dir)
    trainer.setup()
    return trainer.fit()
