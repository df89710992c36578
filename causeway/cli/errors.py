"""How the command reports a usage error: one line on stderr, exit status 2, and under
torchrun only from local rank 0."""

from __future__ import annotations

import argparse
import os
import sys
import time

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
