"""The `causeway` command.

    causeway train [RECIPE] [--run-dir DIR] [--set section.key=value ...]
    causeway config show RECIPE [--set ...]
    causeway data prepare --source builtin --out DIR
    causeway data prepare --input FILE|DIR|GLOB [...] --tokenizer tokenizer.json --out DIR
    causeway data inspect DIR [--samples 3] [--verify] [--split train]
    causeway plan RECIPE --gpus N [--gpu h100|h200|a100] [--set ...] [--json]
    causeway convert arch CKPT --visibility V [--objective O] --out DIR
    causeway convert to-encoder-decoder CKPT --out DIR
    causeway convert export-hf CKPT --out DIR | import-hf DIR --out DIR
    causeway convert inspect CKPT [--allow-partial] [--verify] | consolidate CKPT --out FILE
    causeway launch local RECIPE --nproc N [--run-dir DIR] [--set ...]
    causeway launch slurm RECIPE --nodes N --gpus-per-node G [--dry-run] [...]
    causeway launch ray RECIPE --address ADDR --workers N [--min-workers M] [--submit] [...]
    causeway status RUN_DIR [--json]

Configuration mistakes print one line and exit with status 2 before anything is written:
unknown or mistyped keys and flags, layouts that do not fit, missing or unreadable files,
checkpoints of another model, corrupt datasets (tests/test_bad_inputs.py). Under torchrun
only local rank 0 prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from causeway.config import ConfigError, dump_yaml, load_config

DEFAULT_RECIPE = "quickstart"
EXIT_USAGE = 2
# Under torchrun the ranks other than local rank 0 keep a usage error to themselves; they
# wait this long before exiting so that torchrun does not stop rank 0 before it has said it.
QUIET_RANK_GRACE_S = 2.0


class Parser(argparse.ArgumentParser):
    """argparse, with its mistakes in one line (exit 2) instead of usage plus the error."""

    def error(self, message: str):
        report_usage_error(f"{self.prog}: error: {message} (see {self.prog} --help)")
        raise SystemExit(EXIT_USAGE)


def quiet_rank() -> bool:
    """A torchrun worker other than local rank 0 (each node's rank 0 speaks for it)."""
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0") and "WORLD_SIZE" in os.environ


def report_usage_error(line: str) -> None:
    if quiet_rank():
        time.sleep(QUIET_RANK_GRACE_S)
        return
    print(" ".join(line.split()), file=sys.stderr, flush=True)


def add_config_args(parser: argparse.ArgumentParser, recipe_optional: bool) -> None:
    nargs = "?" if recipe_optional else None
    default = DEFAULT_RECIPE if recipe_optional else None
    parser.add_argument("recipe", nargs=nargs, default=default, help="YAML path or name")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one key, e.g. --set train.steps=100 (repeatable)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="causeway", description=__doc__.split("\n\n")[0])
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


def run_launch(args) -> int:
    if args.launcher == "local":
        from causeway.launcher.local import launch_local

        return launch_local(args.recipe, args.overrides, args.nproc, args.run_dir)
    if args.launcher == "slurm":
        from causeway.launcher.slurm import SlurmJob, launch_slurm

        job = SlurmJob(
            args.nodes, args.gpus_per_node, args.cpus_per_task, args.procs_per_node,
            args.partition, args.account, args.time, args.qos, args.exclusive,
            args.container_image, args.signal_lead, args.max_requeues, args.nccl_socket_ifname,
        )  # fmt: skip
        return launch_slurm(args.recipe, args.overrides, job, args.run_dir, args.dry_run)
    from causeway.launcher.ray_launcher import launch_ray

    return launch_ray(
        args.recipe, args.overrides, address=args.address, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker, max_failures=args.max_failures,
        min_workers=args.min_workers, storage=args.storage, run_dir=args.run_dir,
        submit=args.submit,
    )  # fmt: skip


def run_status(args) -> int:
    import json

    from causeway.launcher.status import run_status as status_text
    from causeway.launcher.status import status_record

    if args.json:
        print(json.dumps(status_record(args.run_dir), indent=2))
    else:
        print(status_text(args.run_dir))
    return 0


def run_convert(args) -> int:
    import json

    from causeway.convert import arch, checkpoints

    command = args.convert_command
    if command == "arch":
        out = arch.convert_arch(
            args.checkpoint, args.visibility, args.objective, args.out,
            keep_optimizer=args.keep_optimizer, allow_partial=args.allow_partial,
        )  # fmt: skip
    elif command == "to-encoder-decoder":
        out = arch.to_encoder_decoder(args.checkpoint, args.out, args.allow_partial)
    elif command == "export-hf":
        from causeway.convert.hf import export_hf

        out = export_hf(Path(args.checkpoint), Path(args.out), args.allow_partial)
    elif command == "import-hf":
        from causeway.convert.hf import import_hf

        out = import_hf(Path(args.checkpoint), Path(args.out), args.recipe)
    elif command == "inspect":
        found = checkpoints.readable_checkpoint(args.checkpoint, args.allow_partial)
        verified = checkpoints.verify(found) if args.verify else None  # raises if corrupt
        print(json.dumps({**checkpoints.describe(found), **(verified or {})}, indent=2))
        return 0
    else:
        out = checkpoints.consolidate(args.checkpoint, args.out, args.allow_partial)
    print(f"causeway: wrote {out}")
    return 0


def run_train(args) -> int:
    from causeway.train.failures import EXIT_FAILED, TrainingFailed
    from causeway.train.stop import EXIT_STOPPED, TrainingStopped
    from causeway.train.trainer import run_training

    overrides = list(args.overrides)
    if args.init_from:
        overrides.append(f"checkpoint.init_from={args.init_from}")
    cfg = load_config(args.recipe, overrides)
    from causeway.launcher.preflight import check_run_inputs

    run_dir = args.run_dir or (Path(cfg.run_dir) if cfg.run_dir else None)
    flags = {"checkpoint.init_from": "--init-from"} if args.init_from else {}
    check_run_inputs(cfg, run_dir, flags=flags)
    try:
        run_training(cfg, args.run_dir)
    except TrainingStopped as stopped:
        print(f"causeway: {stopped}", file=sys.stderr)
        return EXIT_STOPPED
    except TrainingFailed as failed:  # a fault the run cannot go on from, said in one line
        print(f"causeway: error: {failed}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def run_config_show(args) -> int:
    print(dump_yaml(load_config(args.recipe, args.overrides)), end="")
    return 0


def run_plan(args) -> int:
    from causeway.plan.report import main_plan

    return main_plan(args.recipe, args.gpus, args.gpu, args.overrides, args.json)


def run_data(args) -> int:
    if args.data_command == "inspect":
        return run_data_inspect(args)
    return run_data_prepare(args)


def run_data_inspect(args) -> int:
    """The report on stdout; with --verify, damaged shards also make one line on stderr and
    exit status 2."""
    from causeway.data_pipeline.shards.inspection import inspect_dataset, verify_split
    from causeway.data_pipeline.shards.sources import Source, load_source, read_index_at
    from causeway.data_pipeline.shards.urls import is_local
    from causeway.launcher.preflight import open_dataset

    where = args.data_dir
    if is_local(where):
        open_dataset(where, "dataset")  # index.json and tokenizer readable
    splits = read_index_at(where)["splits"]
    if args.split not in splits:
        raise ConfigError(
            f"--split {args.split!r}: {where} has the splits {', '.join(sorted(splits))}"
        )
    print(inspect_dataset(where, args.samples, verify=False, split=args.split))
    if not args.verify:
        return 0
    bad = []
    for name in sorted(splits):
        checks = verify_split(load_source(Source(where), name))
        failed = [c for c in checks if c.problem]
        print(f"verify {name}: {len(checks) - len(failed)} of {len(checks)} shards ok")
        print("".join(f"  {c.name}: {c.problem}\n" for c in failed), end="", flush=True)
        bad += failed
    if bad:
        report_usage_error(
            f"causeway: error: {where}: {len(bad)} shard(s) failed verification (first: "
            f"{bad[0].name}: {bad[0].problem}); re-run `causeway data prepare`"
        )
        return EXIT_USAGE
    return 0


# What `causeway data prepare` itself leaves in --out: it may write into such a directory
# again (an interrupted preparation continues), never into one that holds anything else.
PREPARED_NAMES = ("index.json", "tokenizer.json", ".prepare-progress", ".prepare.lock")


def check_prepare_args(args, source: str) -> None:
    """Contradictory or out-of-range flags and an --out of other files, before any write."""
    from causeway.data_pipeline.tokenizer import DEFAULT_NUM_SENTINELS, reserved_tokens
    from causeway.launcher.preflight import read_tokenizer

    files_only = {
        "--input": bool(args.input), "--tokenizer": args.tokenizer is not None,
        "--val-files": bool(args.val_files), "--pair-fields": bool(args.pair_fields),
        "--max-bad": args.max_bad is not None, "--num-proc": args.num_proc is not None,
        "--text-field": args.text_field != "text",
    }  # fmt: skip
    if source == "builtin":
        given = [flag for flag, on in files_only.items() if on]
        if given:
            raise ConfigError(
                f"--source builtin reads no {', '.join(given)}: those are for --source files"
            )
        minimum = len(reserved_tokens(DEFAULT_NUM_SENTINELS)) + 256
        if args.vocab_size is not None and args.vocab_size < minimum:
            raise ConfigError(
                f"--vocab-size {args.vocab_size} is too small: the builtin BPE needs at least "
                f"{minimum} (reserved tokens and 256 byte symbols)"
            )
    else:
        if args.vocab_size is not None:
            raise ConfigError(
                "--vocab-size sizes the builtin BPE; with --source files the --tokenizer "
                "decides the vocabulary"
            )
        if not args.input or not args.tokenizer:
            raise ConfigError("data prepare --source files needs --input FILES and --tokenizer")
        if args.val_files and args.val_fraction:
            raise ConfigError("--val-files and --val-fraction both choose the validation "
                              "documents: give one")  # fmt: skip
        if args.max_bad is not None and args.max_bad < 0:
            raise ConfigError(f"--max-bad must be >= 0, got {args.max_bad}")
        if args.num_proc is not None and args.num_proc < 1:
            raise ConfigError(f"--num-proc must be >= 1, got {args.num_proc}")
        read_tokenizer(args.tokenizer, "--tokenizer")
    if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if out.is_dir():
        other = sorted(
            p.name for p in out.iterdir()
            if p.name not in PREPARED_NAMES and not p.name.startswith(("train-", "val-"))
            and not p.name.endswith(".partial")
        )  # fmt: skip
        if other:
            raise ConfigError(
                f"--out {out} is not empty and is no dataset ({', '.join(other[:3])}"
                f"{' ...' if len(other) > 3 else ''}): choose a new or empty directory"
            )


def run_data_prepare(args) -> int:
    from causeway.data_pipeline.prepare.prepare import parse_size, prepare_builtin, prepare_files
    from causeway.data_pipeline.shards.index import read_index

    source = args.source or ("files" if args.input else "builtin")
    try:
        shard_bytes = parse_size(args.shard_size)
    except ValueError as err:
        raise ConfigError(f"--shard-size: {err}") from None
    if shard_bytes <= 0:
        raise ConfigError(f"--shard-size must be positive, got {args.shard_size!r}")
    check_prepare_args(args, source)
    if source == "builtin":
        fraction = 0.02 if args.val_fraction is None else args.val_fraction
        out = prepare_builtin(
            args.out, vocab_size=args.vocab_size or 4096, val_fraction=fraction, seed=args.seed,
            shard_bytes=shard_bytes,
        )  # fmt: skip
    else:
        out = prepare_files(
            args.input, args.tokenizer, args.out, text_field=args.text_field,
            val_fraction=args.val_fraction or 0.0, val_files=args.val_files, seed=args.seed,
            pair_fields=tuple(args.pair_fields) if args.pair_fields else None,
            shard_bytes=shard_bytes, num_proc=args.num_proc, max_bad=args.max_bad,
        )  # fmt: skip
        bad = read_index(out).get("bad_inputs", 0)
        if bad:
            print(f"causeway: skipped {bad} bad input records (logged above)", file=sys.stderr)
    print(f"causeway: prepared {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "train": run_train,
        "config": run_config_show,
        "plan": run_plan,
        "convert": run_convert,
        "data": run_data,
        "launch": run_launch,
        "status": run_status,
    }[args.command]
    try:
        return handler(args)
    except ConfigError as err:
        report_usage_error(f"causeway: config error: {err}")
        return EXIT_USAGE
    except (
        FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
    ) as err:  # fmt: skip
        report_usage_error(f"causeway: error: {err}")
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
