"""Zero-shot rank classification, as T0 evaluates: each choice is scored by its summed
log-likelihood given the prompt (no length normalisation) and the best one is the
prediction; beside it, lm-eval's `acc_norm` (log-likelihood per character of the choice).
Accuracy per prompt, and per task the median over its prompts."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from causeway.evaluation.tasks import Task, TaskError, continuation
from causeway.inference.loading import InferenceModel
from causeway.inference.scoring import Request, check_scorable, length_of, score


@dataclass(frozen=True)
class PromptResult:
    prompt: int  # template index
    accuracy: float
    accuracy_norm: float


@dataclass(frozen=True)
class TaskResult:
    task: str
    examples: int
    prompts: list[PromptResult]

    @property
    def accuracy(self) -> float:
        return statistics.median(p.accuracy for p in self.prompts)

    @property
    def accuracy_norm(self) -> float:
        return statistics.median(p.accuracy_norm for p in self.prompts)

    def record(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy, "accuracy_norm": self.accuracy_norm}


@dataclass(frozen=True)
class ZeroShotReport:
    checkpoint: str
    tasks: list[TaskResult]
    seconds: float
    classifications: int  # (example, prompt) pairs scored
    choices: int  # continuations scored

    @property
    def average(self) -> float:
        return statistics.fmean(t.accuracy for t in self.tasks)

    def record(self) -> dict:
        return {
            "checkpoint": self.checkpoint, "average_accuracy": self.average,
            "tasks": [t.record() for t in self.tasks], "seconds": self.seconds,
            "examples_per_s": self.classifications / self.seconds,
            "choices_per_s": self.choices / self.seconds,
        }  # fmt: skip

    def table(self) -> str:
        rows = [f"{'task':<28} {'prompts':>7} {'accuracy':>9} {'acc_norm':>9}  per prompt"]
        for t in self.tasks:
            per = " ".join(f"{p.accuracy:.3f}" for p in t.prompts)
            rows.append(f"{t.task:<28} {len(t.prompts):>7} {t.accuracy:>9.3f} "
                        f"{t.accuracy_norm:>9.3f}  {per}")  # fmt: skip
        rows.append(f"{'average':<28} {'':>7} {self.average:>9.3f}")
        rate = self.classifications / self.seconds
        rows.append(f"{self.classifications} classifications ({self.choices} choices) in "
                    f"{self.seconds:.1f} s: {rate:.1f} examples/s")  # fmt: skip
        return "\n".join(rows)


def task_requests(loaded: InferenceModel, task: Task) -> list[list[list[Request]]]:
    """[example][prompt][choice] requests, each checked against the model's length."""
    tok, model = loaded.tokenizer, loaded.model
    table = []
    for example in task.examples:
        per_prompt = []
        for p, prompt in enumerate(example.prompts):
            context = tok.encode(prompt)
            choices = []
            for c, choice in enumerate(example.choices):
                request = Request(context, tok.encode(continuation(prompt, choice)))
                if length_of(model, request) > model.cfg.max_seq_len:
                    raise TaskError(
                        f"{example.where}: prompt {p} with choice {c} is "
                        f"{length_of(model, request)} tokens; the model reads at most "
                        f"model.max_seq_len={model.cfg.max_seq_len}"
                    )
                choices.append(request)
            per_prompt.append(choices)
        table.append(per_prompt)
    return table


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def evaluate_task(loaded: InferenceModel, task: Task, batch_size: int) -> tuple[TaskResult, int]:
    table = task_requests(loaded, task)
    flat = [r for per_prompt in table for choices in per_prompt for r in choices]
    tok = loaded.tokenizer
    scores = iter(score(loaded.model, flat, tok.pad_id, tok.eos_id, batch_size))
    right = [[0, 0] for _ in range(task.n_prompts)]
    for example, per_prompt in zip(task.examples, table, strict=True):
        for p, choices in enumerate(per_prompt):
            logprobs = [next(scores).logprob for _ in choices]
            normed = [lp / len(c) for lp, c in zip(logprobs, example.choices, strict=True)]
            right[p][0] += argmax(logprobs) == example.answer
            right[p][1] += argmax(normed) == example.answer
    n = len(task.examples)
    prompts = [PromptResult(p, a / n, b / n) for p, (a, b) in enumerate(right)]
    return TaskResult(task.name, n, prompts), len(flat)


def zero_shot(loaded: InferenceModel, tasks: list[Task], batch_size: int = 16) -> ZeroShotReport:
    try:
        check_scorable(loaded.model)
    except ValueError as err:
        raise TaskError(f"{loaded.checkpoint}: {err}") from None
    start = time.perf_counter()
    results, choices = [], 0
    for task in tasks:
        result, scored = evaluate_task(loaded, task, batch_size)
        results.append(result)
        choices += scored
    seconds = time.perf_counter() - start
    classifications = sum(len(t.examples) * t.n_prompts for t in tasks)
    return ZeroShotReport(str(loaded.checkpoint), results, seconds, classifications, choices)
