"""The argument parser of every subcommand (no stage is imported here)."""

from __future__ import annotations

import argparse
from pathlib import Path

from causeway.cli.errors import Parser

DEFAULT_RECIPE = "quickstart"


def add_config_args(parser: argparse.ArgumentParser, recipe_optional: bool) -> None:
    nargs = "?" if recipe_optional else None
    default = DEFAULT_RECIPE if recipe_optional else None
    parser.add_argument("recipe", nargs=nargs, default=default, help="YAML path or name")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one key, e.g. --set train.steps=100 (repeatable)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="causeway", description="The `causeway` command.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a recipe")
    add_config_args(train, recipe_optional=True)
    train.add_argument("--run-dir", type=Path, help="where metrics, config and checkpoints go")
    train.add_argument("--init-from", help="start from a checkpoint's weights (fresh optimizer)")

    config = commands.add_parser("config", help="inspect configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the resolved config as YAML")
    add_config_args(show, recipe_optional=False)

    plan = commands.add_parser("plan", help="dry-run a layout at scale: memory, FLOPs, MFU")
    add_config_args(plan, recipe_optional=False)
    plan.add_argument("--gpus", type=int, required=True, help="world size to plan for")
    plan.add_argument("--gpu", default="h100", help="h100, h200 or a100")
    plan.add_argument("--json", action="store_true", help="print one JSON object")

    add_convert_parser(commands)
    add_launch_parser(commands)
    add_generate_parser(commands)
    add_eval_parser(commands)
    demo = commands.add_parser("demo", help="the paper's pipeline at tiny scale")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True)
    adaptation = demo_commands.add_parser(
        "adaptation", help="pretrain, adapt, finetune and evaluate (report with plots)"
    )
    adaptation.add_argument("--out", type=Path, default=Path("runs/adaptation-demo"))
    adaptation.add_argument("--smoke", action="store_true", help="the few-step version CI runs")
    status = commands.add_parser("status", help="where a run stands (any launcher)")
    status.add_argument("run_dir", type=Path)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    data = commands.add_parser("data", help="prepare datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    prepare = data_commands.add_parser("prepare", help="tokenize text into webdataset shards")
    prepare.add_argument("--source", choices=["builtin", "files"], default=None)
    prepare.add_argument(
        "--input", nargs="+",
        help="files (.jsonl/.json, also .gz or .zst compressed; .txt, .parquet, webdataset "
        ".tar), directories, globs ('data/*.jsonl.gz') or brace ranges ('c4.{00000..01023}"
        ".json.gz')",
    )  # fmt: skip
    prepare.add_argument("--tokenizer", type=Path, help="a Hugging Face tokenizer.json")
    prepare.add_argument("--text-field", default="text")
    prepare.add_argument(
        "--pair-fields", nargs=2, metavar=("INPUTS", "TARGETS"),
        help="store (inputs, targets) pairs from these fields, for the mtf objective",
    )  # fmt: skip
    prepare.add_argument("--val-fraction", type=float, default=None)
    prepare.add_argument(
        "--vocab-size", type=int, default=None, help="builtin BPE size (default 4096)"
    )
    prepare.add_argument("--val-files", nargs="+", help="held-out inputs, as --input")
    prepare.add_argument(
        "--max-bad", type=int, default=None, metavar="N",
        help="fail once more than N malformed lines or members were skipped (default: skip and "
        "count them all)",
    )  # fmt: skip
    prepare.add_argument("--shard-size", default="256MiB", help="target shard size")
    prepare.add_argument("--num-proc", type=int, default=None, help="parallel processes")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--out", type=Path, required=True)
    inspect = data_commands.add_parser("inspect", help="counts and a few decoded samples")
    inspect.add_argument("data_dir")
    inspect.add_argument("--samples", type=int, default=3)
    inspect.add_argument("--verify", action="store_true", help="check every shard's sha256")
    inspect.add_argument("--split", default="train")
    return parser


def add_convert_parser(commands) -> None:
    convert = commands.add_parser("convert", help="convert, inspect and export checkpoints")
    sub = convert.add_subparsers(dest="convert_command", required=True)
    arch = sub.add_parser("arch", help="same weights, another visibility/objective")
    arch.add_argument("checkpoint")
    arch.add_argument("--visibility", required=True, choices=["causal", "prefix", "bidirectional"])
    arch.add_argument("--objective", choices=objectives(), help="objective of the converted model")
    arch.add_argument("--out", required=True)
    arch.add_argument("--allow-partial", action="store_true")
    arch.add_argument("--keep-optimizer", action="store_true", help="keep optimizer and data state")
    ed = sub.add_parser("to-encoder-decoder", help="an encoder-decoder from a decoder")
    ed.add_argument("checkpoint")
    ed.add_argument("--out", required=True)
    ed.add_argument("--allow-partial", action="store_true")
    export = sub.add_parser("export-hf", help="write a Llama-family Hugging Face checkpoint")
    export.add_argument("checkpoint")
    export.add_argument("--out", required=True)
    export.add_argument("--allow-partial", action="store_true")
    imp = sub.add_parser("import-hf", help="read a Llama-family Hugging Face checkpoint")
    imp.add_argument("checkpoint", help="the Hugging Face model directory")
    imp.add_argument("--out", required=True)
    imp.add_argument("--recipe", help="recipe for the sections Llama's config does not give")
    add_foreign_import_parsers(sub)
    inspect = sub.add_parser("inspect", help="step, config, layout, tensors, provenance")
    inspect.add_argument("checkpoint")
    inspect.add_argument("--allow-partial", action="store_true")
    inspect.add_argument(
        "--verify", action="store_true",
        help="check every file's checksum against the commit record (corrupt: exit 2)",
    )  # fmt: skip
    consolidate = sub.add_parser("consolidate", help="one safetensors file of the model")
    consolidate.add_argument("checkpoint")
    consolidate.add_argument("--out", required=True)
    consolidate.add_argument("--allow-partial", action="store_true")


def add_foreign_import_parsers(sub) -> None:
    trust = "these formats are pickles: read them only from a source you trust"
    megatron = sub.add_parser("import-megatron", help="read a Megatron-LM GPT checkpoint")
    megatron.add_argument("checkpoint", help="the save directory, or one iteration's")
    megatron.add_argument("--out", required=True)
    megatron.add_argument("--iteration", type=int, help="default: the tracker file's")
    megatron.add_argument("--recipe", help="recipe for what the saved args do not give")
    megatron.add_argument("--trust-pickle", action="store_true", help=trust)
    ds = sub.add_parser("import-deepspeed", help="read a DeepSpeed ZeRO checkpoint")
    ds.add_argument("checkpoint", help="the directory holding `latest` and the tags")
    ds.add_argument("--out", required=True)
    ds.add_argument("--tag", help="default: the one `latest` names")
    ds.add_argument("--recipe", help="recipe with the model's settings (plain modules)")
    ds.add_argument("--trust-pickle", action="store_true", help=trust)


def objectives() -> list[str]:
    import typing

    from causeway.config.schema import ObjectiveConfig

    return list(typing.get_args(typing.get_type_hints(ObjectiveConfig)["name"]))


def add_launch_parser(commands) -> None:
    launch = commands.add_parser("launch", help="start a run with torchrun, Slurm or Ray")
    sub = launch.add_subparsers(dest="launcher", required=True)
    local = sub.add_parser("local", help="torchrun on this machine")
    add_config_args(local, recipe_optional=False)
    local.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    local.add_argument("--run-dir", type=Path)
    slurm = sub.add_parser("slurm", help="render and submit an sbatch job")
    add_config_args(slurm, recipe_optional=False)
    slurm.add_argument("--nodes", type=int, required=True)
    slurm.add_argument("--gpus-per-node", type=int, required=True, help="0 for CPU partitions")
    slurm.add_argument("--procs-per-node", type=int, help="CPU partitions: processes per node")
    slurm.add_argument("--cpus-per-task", type=int)
    for name in ("partition", "account", "time", "qos", "container-image"):
        slurm.add_argument(f"--{name}")
    slurm.add_argument("--exclusive", action="store_true")
    slurm.add_argument("--signal-lead", type=int, default=120, help="seconds of warning")
    slurm.add_argument("--max-requeues", type=int, default=3)
    slurm.add_argument("--nccl-socket-ifname", help="NCCL_SOCKET_IFNAME for the job")
    slurm.add_argument("--run-dir", type=Path)
    slurm.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    ray = sub.add_parser("ray", help="Ray Train workers on a Ray cluster")
    add_config_args(ray, recipe_optional=False)
    ray.add_argument("--address", required=True, help="Ray cluster address (host:port, auto)")
    ray.add_argument("--workers", type=int, required=True)
    ray.add_argument("--gpus-per-worker", type=int, default=0)
    ray.add_argument("--max-failures", type=int, default=3)
    ray.add_argument("--min-workers", type=int, help="continue on fewer workers, down to M")
    ray.add_argument("--storage", help="storage every worker sees (default: the run dir's)")
    ray.add_argument("--run-dir", type=Path)
    ray.add_argument("--submit", action="store_true", help="submit as a Ray job and return")


def add_generate_parser(commands) -> None:
    gen = commands.add_parser("generate", help="continue prompts with a checkpoint's model")
    gen.add_argument("checkpoint", help="a committed checkpoint (or a run dir: its newest)")
    gen.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    gen.add_argument("--prompt-file", type=Path, help="one prompt per line")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the K likeliest (0: all)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=8, help="prompts decoded together")
    gen.add_argument("--no-cache", action="store_true", help="recompute every position (slow)")
    gen.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    gen.add_argument("--json", action="store_true", help="one JSON object per prompt")


def add_eval_parser(commands) -> None:
    ev = commands.add_parser("eval", help="score a checkpoint: zero-shot tasks, held-out loss")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    zs = sub.add_parser("zero-shot", help="rank classification on jsonl tasks")
    zs.add_argument("checkpoint")
    zs.add_argument(
        "--tasks", nargs="+", required=True,
        help="task .jsonl files or directories; 'builtin': the builtin held-out suite",
    )  # fmt: skip
    zs.add_argument("--out", type=Path, help="write zero_shot.json here")
    zs.add_argument("--batch-size", type=int, default=16, help="continuations per forward")
    zs.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    # `eval harness ARGS` is passed to lm_eval whole (cli/__init__.py); listed for --help.
    sub.add_parser("harness", help="lm-evaluation-harness (its flags) with the causeway model")
    loss = sub.add_parser("loss", help="validation loss and perplexity on held-out shards")
    loss.add_argument("checkpoint")
    loss.add_argument("--data", type=Path, help="a prepared dataset (default: the run's own)")
    loss.add_argument("--max-batches", type=int, help="stop after N batches (default: all)")
    loss.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    loss.add_argument("--json", action="store_true", help="print one JSON object")
