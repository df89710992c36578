"""Finding checkpoints: a run's step directories, its newest committed one, and what a
path given by the user (`--init-from`, `checkpoint.resume`, `causeway convert`) means.

Only committed directories count (`commit.py`): a run directory means its newest
committed checkpoint, and a partial checkpoint named explicitly is refused unless
`allow_partial`. `resume: auto` also passes over corrupt ones (`newest_intact`); a
corrupt checkpoint named explicitly fails when it is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from causeway.checkpoint.commit import COMMIT_MARKER, is_committed
from causeway.checkpoint.integrity import CorruptCheckpoint, check_intact

log = logging.getLogger("causeway.checkpoint")


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every RUN_DIR/checkpoints/step_N directory as (N, path), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.name.startswith("step_") and path.name[5:].isdigit():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def newest_committed(run_dir: Path, warn: bool = True) -> Path | None:
    """The newest committed checkpoint; partial ones newer than it are named in a warning
    (for resumes; `warn=False` keeps quiet)."""
    chosen, skipped = None, []
    for _, path in reversed(step_dirs(run_dir)):
        if is_committed(path):
            chosen = path
            break
        skipped.append(path.name)
    if skipped and warn:
        log.warning("resume: ignoring partial checkpoints %s in %s", ", ".join(skipped), run_dir)
    return chosen


def newest_intact(run_dir: Path, verify: bool = False) -> tuple[Path | None, list[Path]]:
    """For `resume: auto`: the newest committed checkpoint whose files match its commit
    record (sizes; checksums too with `verify`), and the corrupt ones newer than it, each
    named in a warning. (None, []) without committed checkpoints; CorruptCheckpoint
    naming them all when every one is corrupt (starting afresh would lose the run)."""
    if newest_committed(run_dir) is None:  # names the partial ones
        return None, []
    corrupt, errors = [], []
    for _, path in reversed(step_dirs(run_dir)):
        if not is_committed(path):
            continue
        try:
            check_intact(path, verify)
        except CorruptCheckpoint as err:
            log.warning("resume: %s; trying the previous committed checkpoint", err)
            corrupt.append(path)
            errors.append(str(err))
            continue
        return path, corrupt
    raise CorruptCheckpoint(
        f"every committed checkpoint in {run_dir} is corrupt; resume: auto will not start "
        f"afresh, which would lose the run (move them aside to start over): {'; '.join(errors)}"
    )


def resolve_checkpoint(path: str | Path, allow_partial: bool = False) -> Path:
    """A checkpoint directory, or a run directory meaning its newest committed checkpoint."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        newest = newest_committed(path, warn=False)
        if newest is None:
            raise ValueError(f"{path} has no committed checkpoint under checkpoints/")
        return newest
    if not (path / ".metadata").is_file():
        raise ValueError(f"{path} is neither a checkpoint nor a run directory")
    if not is_committed(path) and not allow_partial:
        raise ValueError(
            f"{path} is partial (no {COMMIT_MARKER} marker); pass --allow-partial to use it anyway"
        )
    return path
