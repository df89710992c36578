"""Log-likelihood scoring: batching and padding change nothing, the context is read as the
architecture reads inputs, and greedy generations score as greedy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from causeway.inference.generation import Generation, generate
from causeway.inference.scoring import Request, score
from tests.models.reference import tiny_model

PAD, EOS = 0, 1
MODELS = {
    "causal": dict(visibility="causal"),
    "prefix": dict(visibility="prefix"),
    "encoder_decoder": dict(arch="encoder_decoder", n_encoder_layers=2),
}
REQUESTS = [
    Request([5, 9, 3, 17], [22, 8]),
    Request([7, 2], [40, 41, 42, 43, 44]),
    Request([11, 31, 12, 4, 6, 6, 9, 20], [3]),
    Request([], [13, 14, 15]),  # rolling: starts from EOS
]


@torch.no_grad()
def plain(model, r: Request) -> float:
    """One request alone, no padding: the sum of log-softmax of the continuation."""
    context = r.context or [EOS]
    if model.cfg.arch == "decoder":
        tokens = torch.tensor([context + r.continuation[:-1]])
        logits = model(tokens, prefix_lengths=torch.tensor([[0, len(context)]]))
        logits = logits[0, len(context) - 1 :]
    else:
        logits = model(torch.tensor([context]), torch.tensor([[PAD, *r.continuation[:-1]]]))[0]
    logprobs = F.log_softmax(logits.float(), dim=-1)
    return float(logprobs.gather(1, torch.tensor(r.continuation)[:, None]).sum())


@pytest.mark.parametrize("kind", MODELS)
def test_batched_scores_equal_each_request_alone(kind):
    model = tiny_model(seed=5, **MODELS[kind])
    scores = score(model, REQUESTS, PAD, EOS, batch_size=3)
    for r, s in zip(REQUESTS, scores, strict=True):
        assert s.logprob == pytest.approx(plain(model, r), abs=1e-4)
        assert s.tokens == len(r.continuation) and s.logprob < 0


@pytest.mark.parametrize("kind", MODELS)
def test_a_greedy_generation_scores_as_greedy_and_a_changed_one_does_not(kind):
    model = tiny_model(seed=6, **MODELS[kind])
    prompt = [5, 9, 3, 17, 22]
    produced = generate(model, [prompt], Generation(max_new_tokens=6), PAD)[0]
    changed = produced[:3] + [(produced[3] + 1) % 64] + produced[4:]
    best, other = score(model, [Request(prompt, produced), Request(prompt, changed)], PAD, EOS)
    assert best.greedy and not other.greedy and best.logprob > other.logprob


def test_the_prefix_is_read_both_ways_on_a_prefix_decoder():
    """The same weights score a continuation differently with prefix and causal visibility:
    the context's first token sees its last one only with the prefix."""
    prefix = tiny_model(seed=7, visibility="prefix")
    causal = tiny_model(seed=7, visibility="causal")
    r = [Request([5, 9, 3, 17], [22, 8])]
    assert score(prefix, r, PAD, EOS)[0].logprob != pytest.approx(
        score(causal, r, PAD, EOS)[0].logprob, abs=1e-3
    )


def test_bad_requests_are_refused():
    model = tiny_model(seed=1, visibility="causal")
    with pytest.raises(ValueError, match="empty continuation"):
        score(model, [Request([1, 2], [])], PAD, EOS)
    with pytest.raises(ValueError, match="model.max_seq_len=64"):
        score(model, [Request(list(range(2, 60)), list(range(2, 10)))], PAD, EOS)
    bidirectional = tiny_model(seed=1, visibility="bidirectional")
    with pytest.raises(ValueError, match="bidirectional decoder"):
        score(bidirectional, [Request([1, 2], [3])], PAD, EOS)
