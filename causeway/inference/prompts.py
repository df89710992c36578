"""Text to prompt tokens as each objective's inputs look in training, and span-corruption
output back into the text it fills in."""

from __future__ import annotations

import re

from causeway.data_pipeline.tokenizer import Tokenizer

SENTINEL = re.compile(r"<extra_id_(\d+)>")


def encode_with_sentinels(tokenizer: Tokenizer, text: str) -> list[int]:
    """`<extra_id_N>` in the text becomes sentinel N (the tokenizer itself reads special
    tokens as prose, so that documents containing them stay text)."""
    ids: list[int] = []
    at = 0
    for found in SENTINEL.finditer(text):
        if found.start() > at:
            ids += tokenizer.encode(text[at : found.start()])
        n = int(found.group(1))
        if n >= tokenizer.num_sentinels:
            raise ValueError(f"{found.group(0)}: the tokenizer has {tokenizer.num_sentinels} "
                             "sentinels")  # fmt: skip
        ids.append(tokenizer.sentinel_id(n))
        at = found.end()
    if at < len(text):
        ids += tokenizer.encode(text[at:])
    return ids


def encode_prompt(tokenizer: Tokenizer, text: str, objective: str) -> list[int]:
    """Span corruption's inputs end with EOS (as in training); the others continue the text."""
    ids = encode_with_sentinels(tokenizer, text)
    if objective == "span_corruption":
        ids.append(tokenizer.eos_id)
    if not ids:
        raise ValueError("an empty prompt: give some text")
    return ids


def fill_sentinels(prompt: list[int], output: list[int], tokenizer: Tokenizer) -> list[int]:
    """The prompt with each sentinel replaced by the span the output gives it (T5's targets:
    sentinel 0, span 0, sentinel 1, span 1, ..., EOS); a sentinel the output skips stays."""
    sentinels = set(tokenizer.sentinel_ids())
    spans: dict[int, list[int]] = {}
    current = None
    for token in output:
        if token == tokenizer.eos_id:
            break
        if token in sentinels:
            current = spans.setdefault(token, [])
        elif current is not None:
            current.append(token)
    filled = []
    for token in prompt:
        if token == tokenizer.eos_id:
            continue
        filled += spans.get(token, [token]) if token in sentinels else [token]
    return filled
