"""Generation: the cached and uncached paths give the same tokens, batching does not change
them, and the prompt is read as each architecture reads its inputs."""

from __future__ import annotations

import pytest
import torch

from causeway.inference.generation import Generation, generate
from causeway.inference.sampling import Sampling, next_tokens
from tests.models.reference import tiny_model

PAD = 0
PROMPTS = [[5, 9, 3, 17, 22, 8, 40], [7, 2], [11, 31, 12, 4]]
MODELS = {
    "causal": dict(visibility="causal"),
    "prefix": dict(visibility="prefix"),
    "encoder_decoder": dict(arch="encoder_decoder", n_encoder_layers=2),
}
HOW = {
    "greedy": Sampling(),
    "sampled": Sampling(temperature=0.8, top_k=20, top_p=0.9, seed=3),
}


def run(model, prompts, sampling, use_cache, n=12, stop_at=None):
    how = Generation(max_new_tokens=n, sampling=sampling, stop_at=stop_at, use_cache=use_cache)
    return generate(model, prompts, how, PAD)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("kind", MODELS)
def test_cached_and_uncached_give_the_same_tokens(kind, how):
    model = tiny_model(seed=1, **MODELS[kind])
    cached = run(model, PROMPTS, HOW[how], use_cache=True)
    assert cached == run(model, PROMPTS, HOW[how], use_cache=False)
    assert [len(row) for row in cached] == [12, 12, 12]
    assert len({tuple(row) for row in cached}) == 3  # the prompts matter


@pytest.mark.parametrize("kind", MODELS)
def test_a_prompt_gives_the_same_tokens_alone_and_in_a_padded_batch(kind):
    model = tiny_model(seed=2, **MODELS[kind])
    batched = run(model, PROMPTS, Sampling(), use_cache=True)
    for prompt, row in zip(PROMPTS, batched, strict=True):
        assert run(model, [prompt], Sampling(), use_cache=True) == [row]


def reference_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding written plainly: the whole sequence through forward at each step,
    the prompt as the prefix (prefix decoders) or the encoder input."""
    tokens = list(prompt) if model.cfg.arch == "decoder" else [PAD]
    out = []
    for _ in range(n):
        t = torch.tensor([tokens])
        if model.cfg.arch == "decoder":
            logits = model(t, prefix_lengths=torch.tensor([[0, len(prompt)]]))
        else:
            logits = model(torch.tensor([prompt]), t)
        out.append(int(logits[0, -1].argmax()))
        tokens.append(out[-1])
    return out


@pytest.mark.parametrize("kind", MODELS)
def test_greedy_matches_a_plain_reference(kind):
    model = tiny_model(seed=3, **MODELS[kind])
    for prompt in PROMPTS:
        assert run(model, [prompt], Sampling(), use_cache=True) == [
            reference_greedy(model, prompt, 12)
        ]


def test_prefix_visibility_reads_the_prompt_both_ways():
    """A prefix decoder's first new token depends on the order of the whole prompt through
    bidirectional attention; the causal reading of the same weights gives other tokens."""
    prefix = tiny_model(seed=4, visibility="prefix")
    causal = tiny_model(seed=4, visibility="causal")
    assert run(prefix, PROMPTS, Sampling(), True) != run(causal, PROMPTS, Sampling(), True)


def test_rows_stop_at_eos_and_the_others_go_on():
    model = tiny_model(seed=1, visibility="causal")
    free = run(model, PROMPTS, Sampling(), use_cache=True)
    stop = free[1][3]  # the 4th token of the second row
    stopped = run(model, PROMPTS, Sampling(), use_cache=True, stop_at=stop)
    assert stopped[1] == free[1][: free[1].index(stop) + 1]
    for free_row, row in zip(free, stopped, strict=True):
        assert row == free_row[: len(row)]


def test_the_same_seed_samples_the_same_text_and_another_seed_other_text():
    model = tiny_model(seed=1, visibility="causal")
    a = run(model, PROMPTS, Sampling(temperature=1.0, seed=7), True, n=24)
    assert a == run(model, PROMPTS, Sampling(temperature=1.0, seed=7), True, n=24)
    assert a != run(model, PROMPTS, Sampling(temperature=1.0, seed=8), True, n=24)


def test_top_k_and_top_p_keep_only_the_likely_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    assert set(next_tokens(logits, Sampling(temperature=1.0, top_k=2), g).tolist()) == {0, 1}
    # softmax: 0.64, 0.24, 0.09, ...: the nucleus of 0.8 is the first two tokens
    assert set(next_tokens(logits, Sampling(temperature=1.0, top_p=0.8), g).tolist()) == {0, 1}
    assert set(next_tokens(logits, Sampling(temperature=1.0, top_p=0.5), g).tolist()) == {0}


def test_a_prompt_longer_than_the_model_is_refused():
    model = tiny_model(seed=1, visibility="causal")
    with pytest.raises(ValueError, match="model.max_seq_len=64"):
        run(model, [list(range(1, 60))], Sampling(), True, n=10)
