"""torchrun (`torch.distributed.run`, same arguments) for `causeway launch local`, with the
exit status of the rank that failed first instead of torchrun's 1.

torchrun answers any failed worker with status 1 and a traceback of its ChildFailedError.
Here a usage error in the workers (which local rank 0 has already printed, once) reaches
the shell as 2, a clean stop as EXIT_STOPPED, anything else as that rank's status, with one
line saying which rank failed and where its output is.
"""

from __future__ import annotations

import sys

USAGE = 2


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from causeway.train.stop import EXIT_STOPPED

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ChildFailedError as err:
        rank, first = err.get_first_failure()
        code = first.exitcode
        status = code if code > 0 else 128 - code if code < 0 else 1
        said = code == USAGE and any(
            f.local_rank == 0 and f.exitcode == USAGE for f in err.failures.values()
        )  # local rank 0 printed the error itself
        if not said and code != EXIT_STOPPED:
            how = f"exited with status {code}" if code >= 0 else f"died of {first.signal_name()}"
            where = f"; each rank's output is under {args.log_dir}" if args.log_dir else ""
            print(f"causeway: rank {rank} (local rank {first.local_rank}) {how}{where}",
                  file=sys.stderr, flush=True)  # fmt: skip
        return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
