"""Prompted tasks made from the builtin corpus (the stdlib's docstrings), offline: a small
multitask training mixture of (input, target) pairs for the `mtf` objective, and a held-out
zero-shot suite of multiple-choice tasks in `causeway eval zero-shot`'s jsonl format.

A smoke test of the machinery (finetuning on prompts, rank classification over several
templates, adaptation), not a benchmark of language understanding: the tasks are about
Python's own documentation, and a model of a million parameters scores near chance on
most of them.

Training tasks (generative): name the object a docstring documents; finish its first
sentence; give the first sentence of a docstring. Held-out tasks (multiple choice, none of
them a training task): which module a docstring comes from (4 choices); which sentence
comes next (4); which first sentence belongs to a named function or class (4).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from causeway.data_pipeline.prepare.corpus import builtin_records

TRAIN_TEMPLATES = {
    "name_it": [
        ("Docstring: {first}\nName of the documented object:", "{name}"),
        ("What is this the documentation of?\n{first}", "{name}"),
    ],
    "finish_it": [
        ("Finish the sentence: {head}", "{tail}"),
        ("{head} ...", "{tail}"),
    ],
    "first_sentence": [
        ("Documentation:\n{body}\nIts first sentence:", "{first}"),
        ("Summarize in one sentence:\n{body}", "{first}"),
    ],
}
HELDOUT_TEMPLATES = {
    "docstring_module": [
        "Which module is this docstring from?\n{first}\nModule:",
        "{first}\nThis is documented in the module",
        "Docstring: {first}\nQuestion: which module? Answer:",
    ],
    "next_sentence": [
        "{first}\nWhat comes next?",
        "Continue the documentation: {first}",
        "{first}",
    ],
    "first_sentence_of": [
        "The first sentence of the documentation of {name} is:",
        "{name}:",
        "Documentation of {name}.",
    ],
}
SENTENCE = re.compile(r"(.+?[.!?])(?:\s|$)")


@dataclass(frozen=True)
class Doc:
    module: str
    name: str  # the documented object's last name ("<module>" for a module)
    sentences: tuple[str, ...]
    body: str


def module_of(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def docs(max_body_chars: int = 400) -> list[Doc]:
    """Docstrings with at least two short sentences in their first paragraph."""
    found = []
    for path, name, text in builtin_records():
        paragraph = " ".join(text.split("\n\n")[0].split())
        sentences = tuple(m.group(1) for m in SENTENCE.finditer(paragraph))
        # Short enough that prompt and choice fit the tiny recipes' 128 positions.
        if len(sentences) < 2 or not 20 <= len(sentences[0]) <= 160 or len(sentences[1]) > 160:
            continue
        body = " ".join(text.split())[:max_body_chars]
        found.append(Doc(module_of(path), name.split(".")[-1], sentences, body))
    return found


def train_pairs(documents: list[Doc]) -> list[dict]:
    """{"inputs", "targets", "task"} records, every template of every training task."""
    pairs = []
    for d in documents:
        words = d.sentences[0].split()
        half = max(1, len(words) // 2)
        fields = {"first": d.sentences[0], "name": d.name, "body": d.body,
                  "head": " ".join(words[:half]), "tail": " ".join(words[half:])}  # fmt: skip
        for task, templates in TRAIN_TEMPLATES.items():
            if task == "name_it" and d.name == "<module>":
                continue
            for inputs, targets in templates:
                pairs.append({"task": task, "inputs": inputs.format(**fields),
                              "targets": targets.format(**fields)})  # fmt: skip
    return pairs


def distractors(rng: random.Random, pool: list[str], answer: str, n: int) -> list[str]:
    others: list[str] = []
    while len(others) < n:
        pick = rng.choice(pool)
        if pick != answer and pick not in others:
            others.append(pick)
    return others


def heldout_examples(task: str, documents: list[Doc], n: int, seed: int) -> list[dict]:
    rng = random.Random(f"{task}-{seed}")
    chosen = rng.sample(documents, min(n, len(documents)))
    if task == "docstring_module":
        pool = sorted({d.module for d in documents})
    elif task == "next_sentence":
        pool = [d.sentences[1] for d in documents]
    else:
        pool = [d.sentences[0] for d in documents]
        chosen = [d for d in chosen if d.name != "<module>"]
    examples = []
    for d in chosen:
        answer = {"docstring_module": d.module, "next_sentence": d.sentences[1],
                  "first_sentence_of": d.sentences[0]}[task]  # fmt: skip
        choices = [answer, *distractors(rng, pool, answer, 3)]
        rng.shuffle(choices)
        examples.append({"templates": HELDOUT_TEMPLATES[task], "first": d.sentences[0],
                         "name": d.name, "choices": choices,
                         "answer": choices.index(answer)})  # fmt: skip
    return examples


def write_heldout_tasks(out: str | Path, examples_per_task: int = 100, seed: int = 0) -> Path:
    """One jsonl file per held-out task in `out` (written whole, then renamed in)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    documents = docs()
    for task in HELDOUT_TEMPLATES:
        lines = [json.dumps(e) for e in heldout_examples(task, documents, examples_per_task, seed)]
        partial = out / f"{task}.jsonl.partial"
        partial.write_text("\n".join(lines) + "\n")
        partial.rename(out / f"{task}.jsonl")
    return out


def write_train_pairs(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(p) + "\n" for p in train_pairs(docs())))
    partial.rename(path)
    return path


def ensure_builtin_mtf(out: str | Path, corpus_dir: str | Path) -> Path:
    """The training mixture as a prepared pair dataset in `out` (built once, under a lock
    like the builtin corpus), tokenized with the builtin corpus's tokenizer."""
    from causeway.data_pipeline.prepare.prepare import (
        LOCK_NAME,
        ensure_builtin,
        exclusive_lock,
        prepare_files,
    )
    from causeway.data_pipeline.shards.index import index_path

    out = Path(out)
    if index_path(out).is_file():
        return out
    corpus = ensure_builtin(corpus_dir)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / LOCK_NAME):
        if index_path(out).is_file():
            return out
        pairs = write_train_pairs(out.parent / f"{out.name}-pairs" / "pairs.jsonl")
        return prepare_files([str(pairs)], corpus / "tokenizer.json", out,
                             pair_fields=("inputs", "targets"), val_fraction=0.05)  # fmt: skip
