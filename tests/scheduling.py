"""How `make test` shares the suite between its two pytest-xdist workers (`-n 2`).

A test file is the unit of work, so a file's module fixtures are built once. Files that
share what a machine has only one of are one unit, run one after another on one worker:
the Ray tests (`ray stop` stops every cluster on the machine) and the Slurm tests (one
2-node cluster). The longest units go out first, so that none of them starts last and
leaves the other worker idle; the rest go largest first, as xdist orders them.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

# Path prefix of a test file -> the unit it belongs to.
SHARED_UNITS = {
    "tests/launcher/test_ray": "ray",
    "tests/launcher/test_slurm": "slurm",
    "tests/launcher/test_status.py": "slurm",
}
# The longest units, longest first (from `make test`'s --durations).
LONGEST_FIRST = (
    "ray",
    "slurm",
    "tests/reliability/test_distributed_faults.py",
    "tests/launcher/test_local.py",
    "tests/parallel/test_torchrun.py",
    "tests/convert/foreign/test_megatron.py",
    "tests/convert/foreign/test_deepspeed.py",
    "tests/parallel/test_parity.py",
)


class SharedUnitsScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return next(
            (unit for prefix, unit in SHARED_UNITS.items() if path.startswith(prefix)), path
        )

    def _assign_work_unit(self, node) -> None:
        for unit in reversed(LONGEST_FIRST):
            if unit in self.workqueue:
                self.workqueue.move_to_end(unit, last=False)
        super()._assign_work_unit(node)
