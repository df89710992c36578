"""`causeway generate` on checkpoints trained here: every architecture, one line errors."""

from __future__ import annotations

import json
import shutil

import pytest

from causeway.cli import main


def generate(capsys, *args) -> tuple[int, str, str]:
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("recipe", ["tiny-cd-flm", "tiny-nd-mlm", "tiny-ed-plm"])
def test_generate_prints_a_completion_per_prompt(checkpoints, capsys, recipe):
    ckpt = checkpoints[recipe]
    prompts = ["def add(a, b):", "The quick brown"]
    args = [ckpt, "--prompt", prompts[0], "--prompt", prompts[1], "--max-new-tokens", 8,
            "--json"]  # fmt: skip
    code, out, _ = generate(capsys, *args)
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in records] == prompts
    assert all(isinstance(r["completion"], str) for r in records)
    code, uncached, _ = generate(capsys, *args, "--no-cache")
    assert code == 0 and uncached == out


def test_span_corruption_model_fills_in_the_sentinels(checkpoints, capsys):
    code, out, _ = generate(capsys, checkpoints["tiny-nd-mlm"], "--prompt",
                            "def add(a, b):<extra_id_0> a + b", "--max-new-tokens", 12)  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "prompt:     def add(a, b):<extra_id_0> a + b"
    assert lines[1].startswith("output:     ") and lines[2].startswith("filled in:  def add")


def test_fill_sentinels_puts_each_span_in_its_place(builtin_dir):
    from causeway.data_pipeline.tokenizer import Tokenizer
    from causeway.inference.prompts import encode_prompt, fill_sentinels

    tok = Tokenizer.from_dataset(builtin_dir)
    prompt = encode_prompt(
        tok, "def <extra_id_0>(a, b): return a <extra_id_1> b", "span_corruption"
    )
    assert prompt[-1] == tok.eos_id and tok.sentinel_id(0) in prompt
    s0, s1 = tok.sentinel_id(0), tok.sentinel_id(1)
    output = [s0, *tok.encode("add"), s1, *tok.encode("+"), tok.eos_id, *tok.encode("junk")]
    assert tok.decode(fill_sentinels(prompt, output, tok)) == "def add(a, b): return a + b"
    # A sentinel the output does not fill stays in place.
    partial = fill_sentinels(prompt, [s0, *tok.encode("add"), tok.eos_id], tok)
    assert s1 in partial and s0 not in partial


def test_sampling_is_seeded(checkpoints, capsys):
    args = [checkpoints["tiny-cd-flm"], "--prompt", "import", "--temperature", 1.0,
            "--max-new-tokens", 16, "--json"]  # fmt: skip
    first = generate(capsys, *args, "--seed", 1)[1]
    assert first == generate(capsys, *args, "--seed", 1)[1]
    assert first != generate(capsys, *args, "--seed", 2)[1]


def test_bad_generate_inputs_are_one_line(checkpoints, capsys, tmp_path):
    partial = tmp_path / "step_2"
    shutil.copytree(checkpoints["tiny-cd-flm"], partial)
    (partial / "COMMITTED").unlink()
    cases = [
        ([checkpoints["tiny-bi-mlm"], "--prompt", "x"], "bidirectional decoder"),
        ([partial, "--prompt", "x"], "COMMITTED"),
        ([checkpoints["tiny-cd-flm"]], "needs --prompt TEXT or --prompt-file"),
        ([checkpoints["tiny-cd-flm"], "--prompt-file", tmp_path / "none.txt"], "no such file"),
        ([checkpoints["tiny-cd-flm"], "--prompt", "x", "--top-p", 0], "--top-p must be in"),
        ([checkpoints["tiny-cd-flm"], "--prompt", "x", "--max-new-tokens", 5000],
         "model.max_seq_len"),
    ]  # fmt: skip
    for args, says in cases:
        code, out, err = generate(capsys, *args)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, (args, err)
