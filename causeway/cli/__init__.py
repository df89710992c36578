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
    causeway convert import-megatron DIR --out RUN [--iteration N] [--recipe R] --trust-pickle
    causeway convert import-deepspeed DIR --out RUN [--tag TAG] [--recipe R] --trust-pickle
    causeway convert inspect CKPT [--allow-partial] [--verify] | consolidate CKPT --out FILE
    causeway launch local RECIPE --nproc N [--run-dir DIR] [--set ...]
    causeway launch slurm RECIPE --nodes N --gpus-per-node G [--dry-run] [...]
    causeway launch ray RECIPE --address ADDR --workers N [--min-workers M] [--submit] [...]
    causeway status RUN_DIR [--json]
    causeway generate CKPT --prompt TEXT [--prompt-file F] [--max-new-tokens N] [--temperature T]
        [--top-k K] [--top-p P] [--seed S] [--batch-size B] [--json]
    causeway eval zero-shot CKPT --tasks FILE_OR_DIR ... [--out DIR] [--batch-size B]
    causeway eval loss CKPT [--data DIR] [--max-batches N] [--json]

Configuration mistakes print one line and exit with status 2 before anything is written:
unknown or mistyped keys and flags, layouts that do not fit, missing or unreadable files,
checkpoints of another model, corrupt datasets (tests/test_bad_inputs.py). Under torchrun
only local rank 0 prints it.
"""

from __future__ import annotations

import sys

from causeway.cli import commands, data, inference
from causeway.cli.errors import EXIT_USAGE, report_usage_error
from causeway.cli.parser import build_parser
from causeway.config import ConfigError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["eval", "harness"]:  # every flag after it is lm_eval's, --help included
        return guarded(inference.run_harness, argv[2:])
    return guarded(dispatch, build_parser().parse_args(argv))


def dispatch(args) -> int:
    handler = {
        "train": commands.run_train,
        "config": commands.run_config_show,
        "plan": commands.run_plan,
        "convert": commands.run_convert,
        "data": data.run_data,
        "launch": commands.run_launch,
        "status": commands.run_status,
        "generate": inference.run_generate,
        "eval": inference.run_eval,
        "demo": inference.run_demo,
    }[args.command]
    return handler(args)


def guarded(run, *args) -> int:
    """Usage errors as one line and exit status 2 (ConfigError: a config or flag problem)."""
    try:
        return run(*args)
    except ConfigError as err:
        report_usage_error(f"causeway: config error: {err}")
        return EXIT_USAGE
    except (
        FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
    ) as err:  # fmt: skip
        report_usage_error(f"causeway: error: {err}")
        return EXIT_USAGE
