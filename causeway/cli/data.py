"""`causeway data prepare` and `causeway data inspect`: their flags checked before any write."""

from __future__ import annotations

import sys
from pathlib import Path

from causeway.cli.errors import EXIT_USAGE, report_usage_error
from causeway.config import ConfigError


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
