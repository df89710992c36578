"""The lm-evaluation-harness model, run by a real `lm_eval.simple_evaluate` on tasks defined
by YAML files over local JSON (nothing is downloaded)."""

from __future__ import annotations

import json
import math

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="the eval extra: pip install 'causeway[eval]'")

from lm_eval.tasks import TaskManager  # noqa: E402

from causeway.evaluation.lm_eval_model import CausewayLM  # noqa: E402
from causeway.inference.scoring import Request, score  # noqa: E402

DOCS = [
    {"question": "2 + 2 =", "choices": ["4", "five", "22"], "answer": 0},
    {"question": "The sky is", "choices": ["green", "blue"], "answer": 1},
    {"question": "import", "choices": ["os", "the", "a"], "answer": 2},
    {"question": "def f(x): return", "choices": ["x", "y"], "answer": 0},
]
TASKS = {
    "cw_choice": """
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
""",
    "cw_rolling": """
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{question}} {{choices[0]}}"
metric_list:
  - metric: word_perplexity
""",
    "cw_generate": """
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{choices[answer]}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
""",
}


@pytest.fixture
def task_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    for name, body in TASKS.items():
        head = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    test: {data}\ntest_split: test\n")  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(head + body)
    return tmp_path


@pytest.mark.parametrize("recipe", ["tiny-cd-flm", "tiny-nd-plm", "tiny-ed-plm"])
def test_simple_evaluate_scores_as_causeway_does(checkpoints, task_dir, recipe):
    model = CausewayLM(checkpoint=str(checkpoints[recipe]), batch_size=4, device="cpu")
    results = lm_eval.simple_evaluate(
        model=model, tasks=list(TASKS), task_manager=TaskManager(include_path=str(task_dir)),
        limit=None, bootstrap_iters=0,
    )["results"]  # fmt: skip
    # multiple_choice: lm_eval's accuracy is the rank of causeway's own scores of
    # " " + choice after the question.
    tok, right = model.loaded.tokenizer, 0
    for doc in DOCS:
        asked = [Request(tok.encode(doc["question"]), tok.encode(" " + c)) for c in doc["choices"]]
        logprobs = [s.logprob for s in score(model.loaded.model, asked, tok.pad_id, tok.eos_id)]
        right += logprobs.index(max(logprobs)) == doc["answer"]
    assert results["cw_choice"]["acc,none"] == right / len(DOCS)
    perplexity = results["cw_rolling"]["word_perplexity,none"]
    assert math.isfinite(perplexity) and perplexity > 1
    assert 0 <= results["cw_generate"]["exact_match,none"] <= 1


def test_rolling_windows_cover_a_text_longer_than_the_model(checkpoints):
    """A text of more than max_seq_len tokens is scored in windows that predict each token
    once (lm_eval's disjoint rolling windows)."""
    model = CausewayLM(checkpoint=str(checkpoints["tiny-cd-flm"]), device="cpu")
    model.max_length = 16  # windows of 16 positions (the model reads up to 128)
    tok = model.loaded.tokenizer
    text = " ".join(["alpha beta gamma delta"] * 12)
    tokens = tok.encode(text)
    assert len(tokens) > 40

    class Asked:
        args = (text,)

    (total,) = model.loglikelihood_rolling([Asked()])
    # The first window follows EOS; each next one predicts up to 16 tokens after the 16
    # positions before its end, of which those it does not predict are its context.
    windows = [Request([tok.eos_id], tokens[:16])]
    for at in range(16, len(tokens), 16):
        end = min(at + 16, len(tokens))
        windows.append(Request(tokens[end - 17 : at], tokens[at:end]))
    assert sum(len(w.continuation) for w in windows) == len(tokens)
    by_hand = sum(s.logprob for s in score(model.loaded.model, windows, tok.pad_id, tok.eos_id))
    assert total == pytest.approx(by_hand, rel=1e-5)


def test_the_harness_command_knows_the_causeway_model(checkpoints, task_dir, capsys):
    from causeway.cli import main

    ckpt = checkpoints["tiny-cd-flm"]
    code = main(["eval", "harness", "run", "--model", "causeway", "--model_args",
                 f"checkpoint={ckpt}", "--device", "cpu", "--batch_size", "4",
                 "--tasks", "cw_choice", "--include_path", str(task_dir)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "cw_choice" in out and "acc" in out
