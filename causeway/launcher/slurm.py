"""`causeway launch slurm`: render the sbatch script into the run dir and submit it.

The script (slurm/causeway.sbatch) runs one torchrun agent per node that rendezvous on
the allocation's first host; the preemption flow (warning signal → agreed stop step →
checkpoint → `scontrol requeue` → resume) is described in the README.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from causeway.config import ConfigError
from causeway.launcher.common import (
    freeze_run,
    python,
    require_command,
    resolve_run,
    write_launch_record,
)

TEMPLATE_NAME = "causeway.sbatch"


@dataclass
class SlurmJob:
    nodes: int
    gpus_per_node: int
    cpus_per_task: int | None = None
    procs_per_node: int | None = None  # CPU partitions: training processes per node
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    qos: str | None = None
    exclusive: bool = False
    container_image: str | None = None
    signal_lead: int = 120
    max_requeues: int = 3
    nccl_socket_ifname: str | None = None

    def __post_init__(self) -> None:
        least = {"--nodes": (self.nodes, 1), "--gpus-per-node": (self.gpus_per_node, 0),
                 "--procs-per-node": (self.procs_per_node or 1, 1),
                 "--signal-lead": (self.signal_lead, 0),
                 "--max-requeues": (self.max_requeues, 0)}  # fmt: skip
        for flag, (value, low) in least.items():
            if value < low:
                raise ConfigError(f"{flag} must be >= {low} (got {value})")
        if self.gpus_per_node and self.procs_per_node not in (None, self.gpus_per_node):
            raise ConfigError(
                f"--procs-per-node {self.procs_per_node} contradicts --gpus-per-node "
                f"{self.gpus_per_node}: with GPUs one process runs per GPU (--procs-per-node is "
                "for CPU partitions, --gpus-per-node 0)"
            )

    @property
    def nproc_per_node(self) -> int:
        return self.gpus_per_node or self.procs_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node

    def sbatch_options(self) -> list[str]:
        options = {
            "partition": self.partition, "account": self.account, "time": self.time,
            "qos": self.qos, "gpus-per-node": self.gpus_per_node or None,
        }  # fmt: skip
        lines = [f"#SBATCH --{key}={value}" for key, value in options.items() if value]
        return [*lines, "#SBATCH --exclusive"] if self.exclusive else lines


def find_template() -> Path:
    """The repository's slurm/ folder, or the copy installed under share/causeway/."""
    for root in (Path(__file__).resolve().parents[2], Path(sys.prefix) / "share" / "causeway"):
        if (root / "slurm" / TEMPLATE_NAME).is_file():
            return root / "slurm" / TEMPLATE_NAME
    raise ConfigError(f"the sbatch template slurm/{TEMPLATE_NAME} is missing from this install")


def render(job: SlurmJob, name: str, run_dir: Path) -> str:
    cpus = job.cpus_per_task or max(1, job.nproc_per_node)
    values = {
        "job_name": name, "nodes": job.nodes, "cpus_per_task": cpus,
        "run_dir": shlex.quote(str(run_dir)), "signal_lead": job.signal_lead,
        "sbatch_options": "\n".join(job.sbatch_options()), "max_requeues": job.max_requeues,
        "omp_threads": max(1, cpus // job.nproc_per_node), "python": shlex.quote(python()),
        "nproc_per_node": job.nproc_per_node, "nccl_exports": nccl_exports(job),
        "container_options": container_options(job, run_dir),
    }  # fmt: skip
    text = find_template().read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    left = re.findall(r"\{\{(\w+)\}\}", text)
    if left:
        raise ConfigError(f"the sbatch template has unknown placeholders: {', '.join(left)}")
    return text


def nccl_exports(job: SlurmJob) -> str:
    if not job.nccl_socket_ifname:
        return "# NCCL_SOCKET_IFNAME: unset (NCCL picks); --nccl-socket-ifname sets it"
    value = shlex.quote(job.nccl_socket_ifname)
    # The flag wins over the submitting shell's value, which sbatch would pass on.
    return f"export NCCL_SOCKET_IFNAME={value}"


def container_options(job: SlurmJob, run_dir: Path) -> str:
    """Pyxis/enroot flags: the run dir is mounted at the same path inside the image."""
    if not job.container_image:
        return ""
    image, mount = shlex.quote(job.container_image), shlex.quote(f"{run_dir}:{run_dir}")
    return f"--container-image={image} --container-mounts={mount} --container-workdir=$PWD"


def check_cluster(job: SlurmJob) -> None:
    """Refuse what the cluster can never run, before anything is submitted."""
    require_command("sbatch", "causeway launch slurm submits with sbatch (use --dry-run)")
    require_command("scontrol", "the job script needs scontrol for hostnames and requeue")
    args = ["sinfo", "-h", "-o", "%P %D %G"] + (["-p", job.partition] if job.partition else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode or not rows:
        where = f"partition '{job.partition}'" if job.partition else "the cluster"
        raise ConfigError(f"sinfo shows no nodes in {where}: {out.stderr.strip()}")
    nodes = sum(int(row[1]) for row in rows)
    if job.nodes > nodes:
        raise ConfigError(f"--nodes {job.nodes} but the partition has only {nodes} nodes")
    if job.gpus_per_node and not any("gpu" in row[2] for row in rows):
        raise ConfigError(
            f"--gpus-per-node {job.gpus_per_node} but the partition has no GPUs (gres "
            f"{rows[0][2]}); use --gpus-per-node 0 for a CPU partition"
        )


def submit(script: Path) -> str:
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if out.returncode:
        raise ConfigError(f"sbatch refused the job: {out.stderr.strip()}")
    return out.stdout.strip().split(";")[0]


def launch_slurm(
    recipe: str, overrides: list[str], job: SlurmJob, run_dir: Path | None, dry_run: bool
) -> int:
    sets = [*overrides, f"launch.nodes={job.nodes}", f"launch.gpus_per_node={job.gpus_per_node}"]
    if not job.gpus_per_node:
        sets.append("train.device=cpu")
    cfg, run_dir = resolve_run(recipe, sets, "slurm", job.world_size, run_dir)
    text = render(job, cfg.name, run_dir)
    if dry_run:
        print(text, end="")
        return 0
    check_cluster(job)
    freeze_run(cfg, run_dir)
    script = run_dir / "job.sbatch"
    script.write_text(text)
    job_id = submit(script)
    logs = run_dir / "logs" / f"slurm-{job_id}.out"
    write_launch_record(
        run_dir, launcher="slurm", job_id=job_id, recipe=recipe, script=str(script),
        logs=str(logs), nodes=job.nodes, gpus_per_node=job.gpus_per_node,
        max_requeues=job.max_requeues,
    )  # fmt: skip
    print(f"causeway: submitted Slurm job {job_id}\n  run dir {run_dir}\n  logs    {logs}")
    return 0
