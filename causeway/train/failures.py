"""How a run fails when it cannot go on: one exception type per cause, each with a message
that says what happened, where, and which committed checkpoint a restart would use. The
CLI prints the message as one line and exits with EXIT_FAILED."""

from __future__ import annotations

EXIT_FAILED = 1


class TrainingFailed(RuntimeError):
    """The run stopped on a fault it cannot recover from."""


class TooManyBadSteps(TrainingFailed):
    """`train.max_bad_steps` steps in a row were skipped."""

    def __init__(self, steps: list[int], reasons: list[str], limit: int) -> None:
        listed = ", ".join(f"{s} ({r})" for s, r in zip(steps, reasons, strict=True))
        super().__init__(f"{len(steps)} bad steps in a row (train.max_bad_steps={limit}): {listed}")
        self.steps = steps


class SaveFailed(TrainingFailed):
    """A checkpoint could not be written (a full disk, a lost peer); it was not committed."""

    def __init__(self, step: int, path, cause: str) -> None:
        super().__init__(f"saving step {step} into {path} failed: {cause}")
        self.step, self.path = step, path


class DataWorkersFailed(TrainingFailed):
    """A data worker died `data.worker_restarts` + 1 times in a row without a batch."""


class CollectiveTimeout(TrainingFailed):
    """A collective waited longer than `train.collective_timeout_s` for a peer, or lost
    its connection to one."""


def with_checkpoint(error: TrainingFailed, newest) -> TrainingFailed:
    """The same error, its message naming the checkpoint a restart resumes from."""
    where = f"the newest committed checkpoint is {newest}" if newest else "no committed checkpoint"
    error.args = (f"{error.args[0]}; {where}",)
    return error


def is_peer_failure(error: BaseException) -> bool:
    """Whether a backend error means a peer hung (timeout) or is gone (gloo and NCCL
    both say so in the message; torch has no error types for either)."""
    text = str(error).lower()
    return any(
        words in text for words in ("timed out", "timeout", "closed by peer", "connection reset")
    )


def peer_failure(error: BaseException, seconds: float, rank: int) -> CollectiveTimeout:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = lines[0] if lines else type(error).__name__
    if "time" in cause.lower():
        what = f"waited more than train.collective_timeout_s={seconds:g} s for its peers"
    else:
        what = "lost a peer"
    return CollectiveTimeout(f"rank {rank}: a collective {what} (a rank hung or gone): {cause}")
