"""`causeway eval zero-shot` and `causeway eval loss` on checkpoints trained here; task
files with mistakes are refused naming the file and line."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from causeway.cli import main
from causeway.evaluation.tasks import TaskError, continuation, load_task
from causeway.evaluation.zero_shot import zero_shot
from causeway.inference.loading import load_inference_model
from causeway.inference.scoring import Request, score

EXAMPLES = [
    {"templates": ["Q: {q} A:", "{q}\nAnswer:"], "q": "2 + 2", "choices": ["4", "five"],
     "answer": 0},
    {"templates": ["Q: {q} A:", "{q}\nAnswer:"], "q": "the sky", "choices": ["green", "blue"],
     "answer": 1},
    {"templates": ["Q: {q} A:", "{q}\nAnswer:"], "q": "import", "choices": ["os", "the", "a"],
     "answer": 2},
]  # fmt: skip


def write_task(path, examples) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return str(path)


@pytest.mark.parametrize("recipe", ["tiny-cd-flm", "tiny-nd-plm", "tiny-ed-plm"])
def test_accuracy_is_the_rank_of_the_summed_log_likelihood(checkpoints, tmp_path, recipe):
    """The report's accuracies, recomputed here from `score` request by request."""
    write_task(tmp_path / "qa.jsonl", EXAMPLES)
    task = load_task(tmp_path / "qa.jsonl")
    loaded = load_inference_model(checkpoints[recipe], "cpu")
    report = zero_shot(loaded, [task], batch_size=3)
    tok = loaded.tokenizer
    expected, expected_norm = [], []
    for p in range(2):
        right = right_norm = 0
        for example in task.examples:
            prompt = example.prompts[p]
            requests = [Request(tok.encode(prompt), tok.encode(continuation(prompt, c)))
                        for c in example.choices]  # fmt: skip
            logprobs = [s.logprob for s in score(loaded.model, requests, tok.pad_id, tok.eos_id)]
            normed = [lp / len(c) for lp, c in zip(logprobs, example.choices, strict=True)]
            right += logprobs.index(max(logprobs)) == example.answer
            right_norm += normed.index(max(normed)) == example.answer
        expected.append(right / 3)
        expected_norm.append(right_norm / 3)
    (result,) = report.tasks
    assert [p.accuracy for p in result.prompts] == expected
    assert [p.accuracy_norm for p in result.prompts] == expected_norm
    assert result.accuracy == statistics.median(expected)
    assert report.classifications == 6 and report.choices == 14


def test_the_command_prints_a_table_and_writes_json(checkpoints, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks / "qa.jsonl", EXAMPLES)
    write_task(tasks / "single.jsonl", [{"prompt": "def", "choices": [" f", " g"], "answer": 0}])
    code = main(["eval", "zero-shot", str(checkpoints["tiny-cd-flm"]), "--tasks", str(tasks),
                 "--out", str(tmp_path / "out"), "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split() == ["task", "prompts", "accuracy", "acc_norm", "per",
                                           "prompt"]  # fmt: skip
    assert "qa " in out and "single " in out and "examples/s" in out
    record = json.loads((tmp_path / "out" / "zero_shot.json").read_text())
    assert [t["task"] for t in record["tasks"]] == ["qa", "single"]
    assert record["examples_per_s"] > 0 and 0 <= record["average_accuracy"] <= 1


BAD_TASKS = [
    ('{"prompt": "x", "choices": ["a", "b"]}', ":1: missing field 'answer'"),
    ('{"prompt": "x", "choices": ["a", "b"], "answer": 2}', ":1: 'answer' must be an index"),
    ('{"prompt": "x", "choices": ["a"], "answer": 0}', "at least 2 non-empty strings"),
    ('{"templates": ["{nope}"], "choices": ["a", "b"], "answer": 0}', "names {nope}"),
    ('{"choices": ["a", "b"], "answer": 0}', "either 'prompt'"),
    ('{"prompt": "x", "choices": ["a", "b"], "answer": 0}\n{oops', ":2: not JSON"),
]


@pytest.mark.parametrize("line,says", BAD_TASKS)
def test_a_bad_task_file_is_one_line_naming_file_and_line(checkpoints, tmp_path, capsys, line,
                                                          says):  # fmt: skip
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TaskError, match="bad.jsonl"):
        load_task(path)
    code = main(["eval", "zero-shot", str(checkpoints["tiny-cd-flm"]), "--tasks", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and says in err and f"{path}:" in err and len(err.splitlines()) == 1


def test_a_prompt_longer_than_the_model_and_a_bidirectional_model_are_refused(
    checkpoints, tmp_path, capsys
):
    examples = [{"prompt": p, "choices": ["a", "b"], "answer": 0} for p in ("x", "word " * 400)]
    long = write_task(tmp_path / "long.jsonl", examples)
    code = main(["eval", "zero-shot", str(checkpoints["tiny-cd-flm"]), "--tasks", long])
    err = capsys.readouterr().err
    assert code == 2 and "long.jsonl:2: prompt 0 with choice 0" in err and "max_seq_len" in err
    short = write_task(tmp_path / "short.jsonl", EXAMPLES)
    code = main(["eval", "zero-shot", str(checkpoints["tiny-bi-mlm"]), "--tasks", short])
    err = capsys.readouterr().err
    assert code == 2 and "bidirectional decoder" in err and len(err.splitlines()) == 1


def test_eval_loss_gives_validation_loss_and_perplexity(checkpoints, builtin_dir, capsys):
    code = main(["eval", "loss", str(checkpoints["tiny-cd-flm"]), "--json", "--device", "cpu"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["val_tokens"] > 1000
    assert result["perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert 0 < result["val_loss"] < 1.1 * math.log(4096)
    code = main(["eval", "loss", str(checkpoints["tiny-cd-flm"]), "--data", str(builtin_dir),
                 "--max-batches", "1", "--json"])  # fmt: skip
    one = json.loads(capsys.readouterr().out)
    assert code == 0 and one["val_tokens"] < result["val_tokens"]


def test_the_builtin_suite_has_three_disjoint_held_out_tasks(checkpoints, capsys):
    from causeway.data_pipeline.prepare.builtin_tasks import HELDOUT_TEMPLATES, TRAIN_TEMPLATES

    assert not set(HELDOUT_TEMPLATES) & set(TRAIN_TEMPLATES)
    code = main(["eval", "zero-shot", str(checkpoints["tiny-nd-plm"]), "--tasks", "builtin"])
    out, err = capsys.readouterr()
    assert code == 0, err
    for task in HELDOUT_TEMPLATES:
        row = next(line for line in out.splitlines() if line.startswith(task))
        assert row.split()[1] == "3"  # prompts
