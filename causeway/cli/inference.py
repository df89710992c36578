"""`causeway generate` and `causeway eval`: reading and scoring text with a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from causeway.config import ConfigError


def prompt_texts(prompts: list[str], prompt_file: Path | None) -> list[str]:
    texts = list(prompts)
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise ConfigError(f"--prompt-file {prompt_file}: no such file")
        texts += [line for line in prompt_file.read_text().splitlines() if line.strip()]
    if not texts:
        raise ConfigError("generate needs --prompt TEXT or --prompt-file FILE")
    return texts


def run_generate(args) -> int:
    from causeway.inference.generation import Generation, generate
    from causeway.inference.loading import load_inference_model
    from causeway.inference.prompts import encode_prompt, fill_sentinels
    from causeway.inference.sampling import Sampling

    texts = prompt_texts(args.prompt, args.prompt_file)
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise ConfigError("--max-new-tokens and --batch-size must be >= 1")
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
    loaded = load_inference_model(args.checkpoint, args.device)
    if loaded.visibility == "bidirectional":
        raise ConfigError(
            f"{loaded.checkpoint} is a bidirectional decoder (masked_lm): it predicts tokens "
            "in place and cannot continue text; adapt it first (`causeway convert arch CKPT "
            "--visibility causal --objective full_lm`, then train)"
        )
    tok, objective = loaded.tokenizer, loaded.cfg.objective.name
    prompts = [encode_prompt(tok, text, objective) for text in texts]
    how = Generation(args.max_new_tokens, sampling, tok.eos_id, not args.no_cache)
    outputs = []
    for at in range(0, len(prompts), args.batch_size):
        outputs += generate(loaded.model, prompts[at : at + args.batch_size], how, tok.pad_id)
    for text, prompt, output in zip(texts, prompts, outputs, strict=True):
        record = {"prompt": text, "completion": tok.decode(output, skip_special_tokens=True)}
        if objective == "span_corruption":
            record["output"] = tok.decode(output)  # the sentinels and their spans
            record["filled"] = tok.decode(fill_sentinels(prompt, output, tok))
        print(json.dumps(record) if args.json else render(record), flush=True)
    return 0


def render(record: dict) -> str:
    lines = [f"prompt:     {record['prompt']}", f"completion: {record['completion']}"]
    if "filled" in record:
        lines[1] = f"output:     {record['output']}"
        lines.append(f"filled in:  {record['filled']}")
    return "\n".join(lines) + "\n"


def run_eval(args) -> int:
    if args.eval_command == "loss":
        return run_eval_loss(args)
    if args.eval_command == "harness":
        return run_harness([])
    from causeway.evaluation.tasks import load_task, task_files
    from causeway.evaluation.zero_shot import zero_shot
    from causeway.inference.loading import load_inference_model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    given = [builtin_tasks() if t == "builtin" else t for t in args.tasks]
    tasks = [load_task(path) for path in task_files(given)]  # every file checked first
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file, not a directory")
    report = zero_shot(load_inference_model(args.checkpoint, args.device), tasks, args.batch_size)
    print(report.table())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "zero_shot.json"
        path.write_text(json.dumps(report.record(), indent=2) + "\n")
        print(f"causeway: wrote {path}")
    return 0


def run_eval_loss(args) -> int:
    from causeway.evaluation.heldout import heldout_loss

    if args.max_batches is not None and args.max_batches < 1:
        raise ConfigError(f"--max-batches must be >= 1, got {args.max_batches}")
    if args.data is not None and not (args.data / "index.json").is_file():
        raise ConfigError(f"--data {args.data}: no prepared dataset (no index.json) there")
    result = heldout_loss(args.checkpoint, args.data, args.device, args.max_batches)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"val_loss {result['val_loss']:.4f}  perplexity {result['perplexity']:.2f}  "
            f"({result['val_tokens']} tokens of {result['data']}, {result['objective']})"
        )
    return 0


def run_harness(harness_args: list[str]) -> int:
    """lm_eval's own command line, after registering the "causeway" model."""
    import sys

    try:
        from lm_eval.__main__ import cli_evaluate

        import causeway.evaluation.lm_eval_model  # noqa: F401  (registers "causeway")
    except ImportError as err:
        raise ConfigError(f"eval harness needs lm-evaluation-harness ({err}): pip install "
                          "'causeway[eval]'") from None  # fmt: skip
    sys.argv = ["causeway eval harness", *harness_args]
    cli_evaluate()
    return 0


def run_demo(args) -> int:
    from causeway.demo.adaptation import SMOKE, Settings, run_demo

    run_demo(args.out, SMOKE if args.smoke else Settings())
    return 0


def builtin_tasks():
    """The held-out builtin suite (data_pipeline/prepare/builtin_tasks.py), written once."""
    from causeway.data_pipeline.prepare.builtin_tasks import HELDOUT_TEMPLATES, write_heldout_tasks
    from causeway.train.data import builtin_data_dir

    where = builtin_data_dir().with_name("builtin-tasks")
    if not all((where / f"{task}.jsonl").is_file() for task in HELDOUT_TEMPLATES):
        write_heldout_tasks(where)
    return where
