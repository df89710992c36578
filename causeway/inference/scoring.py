"""Log-likelihood of continuations given contexts, batched: what rank classification and
lm-evaluation-harness ask of a model.

The context is read as each architecture reads its inputs: causally by a causal decoder,
as the prefix (bidirectionally) by a prefix decoder, as the encoder input by an
encoder-decoder, whose decoder starts from the pad token as in training. An empty
context (a rolling log-likelihood) starts from EOS, the token that ends the document
before. A bidirectional decoder predicts in place and cannot score a continuation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from causeway.inference.rows import Rows


@dataclass(frozen=True)
class Request:
    context: list[int]
    continuation: list[int]


@dataclass(frozen=True)
class Score:
    logprob: float  # summed over the continuation's tokens
    greedy: bool  # every continuation token was the most likely one
    tokens: int


def check_scorable(model: nn.Module) -> None:
    if model.cfg.arch == "decoder" and model.visibility == "bidirectional":
        raise ValueError(
            "a bidirectional decoder (masked_lm) predicts tokens in place: it cannot score a "
            "continuation; adapt it to causal or prefix visibility first"
        )


def length_of(model: nn.Module, request: Request) -> int:
    """Positions the request takes in the model (decoders: context + continuation - 1)."""
    if model.cfg.arch == "encoder_decoder":
        return max(len(request.context), len(request.continuation))
    return max(len(request.context), 1) + len(request.continuation) - 1


@torch.no_grad()
def score(
    model: nn.Module, requests: list[Request], pad_id: int, eos_id: int, batch_size: int = 16
) -> list[Score]:
    """One `Score` per request, in order. Requests are batched longest first."""
    check_scorable(model)
    model.eval()
    for i, r in enumerate(requests):
        if not r.continuation:
            raise ValueError(f"request {i}: an empty continuation has nothing to score")
        if length_of(model, r) > model.cfg.max_seq_len:
            raise ValueError(f"request {i}: {length_of(model, r)} positions; the model has "
                             f"model.max_seq_len={model.cfg.max_seq_len}")  # fmt: skip
    order = sorted(range(len(requests)), key=lambda i: -length_of(model, requests[i]))
    scores: dict[int, Score] = {}
    for at in range(0, len(order), batch_size):
        chunk = order[at : at + batch_size]
        batch = [requests[i] for i in chunk]
        for i, s in zip(chunk, score_batch(model, batch, pad_id, eos_id), strict=True):
            scores[i] = s
    return [scores[i] for i in range(len(requests))]


def score_batch(model: nn.Module, batch: list[Request], pad_id: int, eos_id: int) -> list[Score]:
    device = next(model.parameters()).device
    if model.cfg.arch == "encoder_decoder":
        enc = Rows.of([r.context or [eos_id] for r in batch], pad_id, False, device)
        dec = Rows.of([[pad_id, *r.continuation[:-1]] for r in batch], pad_id, False, device)
        logits = model(enc.tokens, dec.tokens, enc.positions, dec.positions, enc.segments,
                       dec.segments)  # fmt: skip
        starts = [0] * len(batch)
    else:
        contexts = [r.context or [eos_id] for r in batch]
        rows = [c + r.continuation[:-1] for c, r in zip(contexts, batch, strict=True)]
        laid = Rows.of(rows, pad_id, False, device)
        lengths = torch.tensor([len(c) for c in contexts], device=device)
        prefix_lengths = torch.stack([torch.zeros_like(lengths), lengths], 1)
        logits = model(laid.tokens, laid.positions, laid.segments, prefix_lengths)
        starts = [len(c) - 1 for c in contexts]
    logprobs = F.log_softmax(logits.float(), dim=-1)
    out = []
    for i, r in enumerate(batch):
        at = slice(starts[i], starts[i] + len(r.continuation))
        predicted = logprobs[i, at]
        wanted = torch.tensor(r.continuation, device=device)
        picked = predicted.gather(1, wanted[:, None]).squeeze(1)
        greedy = bool((predicted.argmax(dim=-1) == wanted).all())
        out.append(Score(float(picked.sum()), greedy, len(r.continuation)))
    return out
