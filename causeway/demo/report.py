"""The demo's report: a markdown table of every checkpoint and two PNG plots (the loss
curves of all runs over the tokens each model has seen, and zero-shot accuracy before and
after multitask finetuning)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

CHANCE = 0.25  # every held-out builtin task has 4 choices


def tokens_per_step(run_dir: Path) -> int:
    """Positions of one global batch (padding included): the same budget for every
    objective (the stream's own token counts include documents read ahead for packing)."""
    from causeway.config import load_config

    cfg = load_config(str(run_dir / "config.yaml"))
    d = cfg.data
    width = d.inputs_length + d.targets_length if cfg.model.arch == "encoder_decoder" else d.seq_len
    return d.batch_size * width


def curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """(tokens this run has trained on, loss) at each logged step."""
    per_step = tokens_per_step(run_dir)
    tokens, losses = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            tokens.append(record["step"] * per_step)
            losses.append(record["loss"])
    return tokens, losses


def tokens_seen(runs, run_dir: Callable[[str], Path]) -> dict[str, int]:
    """Each model's tokens, those of the runs it started from included."""
    seen: dict[str, int] = {}
    for run in runs:  # in order: a run's start comes before it
        own = curve(run_dir(run.name))[0]
        seen[run.name] = (own[-1] if own else 0) + (seen[run.start] if run.start else 0)
    return seen


def write_report(out: Path, runs, done: dict, run_dir: Callable[[str], Path]) -> Path:
    seen = tokens_seen(runs, run_dir)
    evals = {run.name: done[f"eval {run.name}"] for run in runs}
    task_names = [t["task"] for t in next(iter(evals.values()))["zero_shot"]["tasks"]]
    head = ["model", "stage", "tokens seen", "val loss (own objective)", *task_names, "average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        e = evals[run.name]
        accuracy = [f"{t['accuracy']:.3f}" for t in e["zero_shot"]["tasks"]]
        lines.append("| " + " | ".join([
            run.name, run.stage, f"{seen[run.name]:,}",
            f"{e['val_loss']['val_loss']:.3f} ({e['val_loss']['objective']})", *accuracy,
            f"{e['zero_shot']['average_accuracy']:.3f}",
        ]) + " |")  # fmt: skip
    rate = [e["zero_shot"]["examples_per_s"] for e in evals.values()]
    plots = plot_losses(out, runs, run_dir), plot_accuracy(out, runs, evals)
    seconds = sum(v.get("seconds", 0) for v in done.values())
    text = "\n".join([
        "# Adaptation demo (tiny scale, builtin corpus)", "",
        f"Settings: `{json.dumps(json.loads((out / 'settings.json').read_text()))}`. "
        f"Stages took {seconds:.0f} s in all; zero-shot scoring ran at "
        f"{min(rate):.0f}-{max(rate):.0f} examples/s (an example: one prompt, all its choices).",
        "", *lines, "",
        f"Zero-shot accuracy is the median over each task's 3 prompts; chance is {CHANCE}.",
        "Validation losses of different objectives are not comparable with each other.", "",
        f"![loss curves]({plots[0].name})", "", f"![zero-shot accuracy]({plots[1].name})", "",
    ])  # fmt: skip
    report = out / "report.md"
    report.write_text(text)
    return report


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError(f"the demo's plots need matplotlib ({err}): pip install "
                           "'causeway[demo]'") from None  # fmt: skip
    return plt


def plot_losses(out: Path, runs, run_dir) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    offsets: dict[str, int] = {}
    for run in runs:
        tokens, losses = curve(run_dir(run.name))
        offset = offsets.get(run.start, 0) if run.start else 0
        offsets[run.name] = offset + (tokens[-1] if tokens else 0)
        ax.plot([t + offset for t in tokens], losses, label=f"{run.name} ({run.stage})")
    return finish(plt, fig, ax, out / "loss_curves.png", "tokens seen by the model",
                  "training loss (own objective)",
                  "Pretraining, adaptation and multitask finetuning")  # fmt: skip


def plot_accuracy(out: Path, runs, evals: dict) -> Path:
    plt = pyplot()
    bases = [r for r in runs if r.stage != "mtf"]
    after = {r.start: r.name for r in runs if r.stage == "mtf"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for i, run in enumerate(bases):
        before = evals[run.name]["zero_shot"]["average_accuracy"]
        tuned = evals[after[run.name]]["zero_shot"]["average_accuracy"]
        ax.bar(
            i - width / 2, before, width, color="tab:blue", label="before MTF" if i == 0 else None
        )
        ax.bar(
            i + width / 2, tuned, width, color="tab:orange", label="after MTF" if i == 0 else None
        )
    ax.axhline(CHANCE, color="gray", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(bases)), [r.name for r in bases], fontsize=8)
    return finish(plt, fig, ax, out / "zero_shot.png", None,
                  "zero-shot accuracy (average over held-out tasks)",
                  "Held-out builtin tasks, before and after multitask finetuning")  # fmt: skip


def finish(plt, fig, ax, path: Path, xlabel, ylabel: str, title: str) -> Path:
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
