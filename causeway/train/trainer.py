"""The training run: set-up, then a short loop with hooks for logging and evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from causeway.checkpoint.final import save_final
from causeway.config import RunConfig, save_config
from causeway.models import build_model, materialize
from causeway.models.flops import count_parameters, flops_per_token
from causeway.train.data import TrainData, build_data
from causeway.train.metrics import MetricsLogger
from causeway.train.optim import build_optimizer, build_scheduler
from causeway.train.step import evaluate, train_step


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def refuse_parallel(cfg: RunConfig) -> None:
    p = cfg.parallel
    if p.dp_replicate * max(p.dp_shard, 1) * p.tp * p.pp != 1:
        from causeway.config import ConfigError

        raise ConfigError(
            "parallel: this trainer runs one process; tp/pp/dp sizes above 1 need the "
            "parallel trainer (torchrun), which this build does not include yet"
        )


@dataclass
class Trainer:
    cfg: RunConfig
    run_dir: Path

    def setup(self) -> None:
        cfg = self.cfg
        refuse_parallel(cfg)
        self.device = pick_device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        self.data: TrainData = build_data(cfg)
        self.model = materialize(build_model(cfg.model), self.device, seed=cfg.train.seed)
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        self.scheduler = build_scheduler(cfg.schedule, self.optimizer, cfg.train.steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        self.metrics = MetricsLogger(self.run_dir, cfg.train.steps, cfg.train.progress)
        seq = cfg.data.seq_len if cfg.model.arch == "decoder" else cfg.data.inputs_length
        self.flops_per_token = flops_per_token(cfg.model, seq)
        self.parameters = count_parameters(self.model)

    def fit(self) -> list[dict]:
        """Run every step; returns the logged records (also in metrics.jsonl)."""
        cfg, t = self.cfg, self.cfg.train
        print(f"causeway: {self.parameters:,} parameters, run dir {self.run_dir}", flush=True)
        records, window_tokens, window_start = [], 0, time.perf_counter()
        for step in range(1, t.steps + 1):
            result = train_step(
                self.model, self.optimizer, next(self.data.train),
                arch=cfg.model.arch, micro_batch_size=cfg.data.micro_batch_size,
                z_loss=t.z_loss, grad_clip=t.grad_clip, precision=t.precision,
                device=self.device,
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
                self.metrics.log(step, figures)
                records.append({"step": step, **figures})
        save_final(self.run_dir, t.steps, cfg, self.model, self.optimizer)
        self.metrics.close()
        return records

    def step_figures(self, result, lr: float, tokens_per_s: float) -> dict:
        flops = self.flops_per_token * tokens_per_s
        peak = self.cfg.train.peak_tflops * 1e12
        figures = {
            "loss": result.loss,
            "lr": lr,
            "grad_norm": result.grad_norm,
            "tokens_per_s": round(tokens_per_s, 1),
            "flops_per_token": self.flops_per_token,
        }
        if peak:
            figures["mfu"] = flops / peak
        if self.cfg.train.z_loss:
            figures["z_loss"] = result.z_loss
        return figures

    def validate(self) -> dict[str, float]:
        batches = self.data.validation(self.cfg.train.eval_batches)
        return evaluate(
            self.model, batches, self.cfg.model.arch, self.cfg.train.precision, self.device
        )


def run_training(cfg: RunConfig, run_dir: Path | None = None) -> list[dict]:
    run_dir = Path(run_dir or cfg.run_dir or default_run_dir(cfg))
    cfg.run_dir = str(run_dir)
    trainer = Trainer(cfg, run_dir)
    trainer.setup()
    return trainer.fit()
