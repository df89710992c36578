"""The subcommands other than `data`: each imports its stage only when it runs."""

from __future__ import annotations

import sys
from pathlib import Path

from causeway.config import dump_yaml, load_config


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
    elif command == "import-megatron":
        from causeway.convert.foreign.importers import import_megatron

        out = import_megatron(Path(args.checkpoint), Path(args.out), args.iteration,
                              args.recipe, args.trust_pickle)  # fmt: skip
    elif command == "import-deepspeed":
        from causeway.convert.foreign.importers import import_deepspeed

        out = import_deepspeed(Path(args.checkpoint), Path(args.out), args.tag, args.recipe,
                               args.trust_pickle)  # fmt: skip
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
    overrides = list(args.overrides)
    if args.init_from:
        overrides.append(f"checkpoint.init_from={args.init_from}")
    # The config and the inputs are checked before the trainer (and torch) is imported:
    # a typo is reported in a fraction of a second, not after seconds of imports.
    cfg = load_config(args.recipe, overrides)
    from causeway.launcher.preflight import check_run_inputs

    run_dir = args.run_dir or (Path(cfg.run_dir) if cfg.run_dir else None)
    flags = {"checkpoint.init_from": "--init-from"} if args.init_from else {}
    check_run_inputs(cfg, run_dir, flags=flags)
    from causeway.train.failures import EXIT_FAILED, TrainingFailed
    from causeway.train.stop import EXIT_STOPPED, TrainingStopped
    from causeway.train.trainer import run_training

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
