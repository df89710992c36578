"""Zero-shot tasks: a jsonl file per task, one example per line.

    {"prompt": "Which module ...?\\n{code}", "choices": ["a", "b", "c"], "answer": 1, ...}
    {"templates": ["Q: {question} A:", "{question}\\nAnswer:"], "choices": [...], "answer": 0,
     "question": "..."}

`prompt` is one prompt; `templates` are several, whose `{field}` placeholders are filled
from the example's other fields (a field a template names must be there). Every example of
a task must give the same number of prompts (prompt i of each example is template i). A
choice is scored as the continuation of the prompt, joined by one space unless the prompt
ends in whitespace. The task's name is the file's stem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

FIELD = re.compile(r"\{(\w+)\}")


class TaskError(ValueError):
    """A task file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Example:
    prompts: tuple[str, ...]  # one per template
    choices: tuple[str, ...]
    answer: int
    where: str  # file:line


@dataclass(frozen=True)
class Task:
    name: str
    path: Path
    examples: tuple[Example, ...]

    @property
    def n_prompts(self) -> int:
        return len(self.examples[0].prompts)


def task_files(paths: list[str | Path]) -> list[Path]:
    """Files as given; a directory gives its *.jsonl files, sorted."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            inside = sorted(given.glob("*.jsonl"))
            if not inside:
                raise TaskError(f"--tasks {given}: the directory holds no .jsonl task file")
            found += inside
        elif given.is_file():
            found.append(given)
        else:
            raise TaskError(f"--tasks {given}: no such file or directory")
    return found


def fill(template: str, example: dict, where: str) -> str:
    def value(found: re.Match) -> str:
        name = found.group(1)
        if name not in example:
            raise TaskError(f"{where}: the template names {{{name}}}, a field the example "
                            "does not have")  # fmt: skip
        return str(example[name])

    return FIELD.sub(value, template)


def parse_example(record: object, where: str) -> Example:
    if not isinstance(record, dict):
        raise TaskError(f"{where}: an example must be a JSON object")
    if ("prompt" in record) == ("templates" in record):
        raise TaskError(f"{where}: give either 'prompt' (a string) or 'templates' (a list)")
    for key in ("choices", "answer"):
        if key not in record:
            raise TaskError(f"{where}: missing field '{key}'")
    choices, answer = record["choices"], record["answer"]
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise TaskError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise TaskError(f"{where}: 'answer' must be an index into the {len(choices)} choices, "
                        f"got {answer!r}")  # fmt: skip
    if "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise TaskError(f"{where}: 'prompt' must be a string")
        prompts = (record["prompt"],)
    else:
        templates = record["templates"]
        if (
            not isinstance(templates, list)
            or not templates
            or not all(isinstance(t, str) for t in templates)
        ):
            raise TaskError(f"{where}: 'templates' must be a non-empty list of strings")
        prompts = tuple(fill(t, record, where) for t in templates)
    return Example(prompts, tuple(choices), answer, where)


def load_task(path: Path) -> Task:
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TaskError(f"{where}: not JSON ({err.msg})") from None
        example = parse_example(record, where)
        if examples and len(example.prompts) != len(examples[0].prompts):
            raise TaskError(f"{where}: {len(example.prompts)} prompts; the task's first example "
                            f"has {len(examples[0].prompts)}")  # fmt: skip
        examples.append(example)
    if not examples:
        raise TaskError(f"{path}: no examples")
    return Task(path.stem, path, tuple(examples))


def continuation(prompt: str, choice: str) -> str:
    return choice if prompt[-1:].isspace() or choice[:1].isspace() else " " + choice
