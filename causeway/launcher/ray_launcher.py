"""`causeway launch ray`: Ray Train workers (TorchTrainer, Train V2) on a Ray cluster.

Ray Train starts the workers, makes their process group (gloo on CPUs, NCCL on GPUs)
and restarts them after a worker or node failure, up to --max-failures times; every
start resumes from the newest committed checkpoint (`checkpoint.resume: auto`). The run
directory is Ray's experiment directory (storage_path/name): a stable name, so that a
re-submitted run resumes too. With --min-workers M, Ray's elastic scaling
(ScalingConfig(num_workers=(M, N))) restarts on as many workers as the cluster can
still place, down to M; checkpoints load under any layout and the data stream's
position is global, so no document is read twice or skipped.

Everything that can be checked is checked before anything starts, each as one line
(ConfigError): ray missing, the recipe and layout, the address, GPUs, capacity.
"""

from __future__ import annotations

import copy
import logging
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

from causeway.config import ConfigError, RunConfig
from causeway.launcher.common import freeze_run, resolve_run, write_launch_record
from causeway.parallel.dims import ParallelDims

PROBE_TIMEOUT_S = 5.0  # TCP connect to the cluster's GCS
INIT_TIMEOUT_S = 60.0  # ray.init once the port answers (something else may listen there)
SUBMITTED_ENV = "CAUSEWAY_RAY_SUBMISSION"  # set in a submitted job's driver
FORWARDED_ENV = ("CAUSEWAY_DATA_HOME", "OMP_NUM_THREADS", "HF_HOME", "WANDB_MODE", "WANDB_DIR",
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # fmt: skip
EXCLUDES = [".venv", "runs", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"]


def require_ray():
    try:
        import ray
        import ray.train.torch  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"ray is not installed ({err}): pip install 'causeway[ray]'") from err
    return ray


def plan_run(
    recipe: str, overrides: list[str], workers: int, min_workers: int | None,
    gpus_per_worker: int, storage: str | None, run_dir: Path | None,
) -> tuple[RunConfig, Path]:  # fmt: skip
    """The checked config and the run dir, with the layout checked for every worker count
    Ray may choose."""
    if workers < 1 or gpus_per_worker < 0:
        raise ConfigError(f"--workers must be >= 1 and --gpus-per-worker >= 0 (got {workers}, "
                          f"{gpus_per_worker})")  # fmt: skip
    if min_workers is not None and not 1 <= min_workers <= workers:
        raise ConfigError(f"--min-workers {min_workers} must be in 1..--workers {workers}")
    sets = [*overrides, *([] if gpus_per_worker else ["train.device=cpu"])]
    cfg, default_dir = resolve_run(recipe, sets, "ray", workers, run_dir)
    if storage:
        # The experiment dir Ray reports checkpoints in place from must be under storage.
        root = Path(storage).resolve()
        if run_dir is None:
            default_dir = root / cfg.name  # stable: a re-submitted run finds its checkpoints
        elif not default_dir.is_relative_to(root):
            raise ConfigError(f"--run-dir {default_dir} is not under --storage {root}")
    run_dir = default_dir
    cfg.run_dir = str(run_dir)
    for size in range(min_workers or workers, workers):
        try:
            ParallelDims.from_config(copy.deepcopy(cfg), size)
        except ConfigError as err:
            sizes = f"{min_workers}..{workers}"
            raise ConfigError(
                f"--min-workers {min_workers}: Ray may continue on any of {sizes} workers, "
                f"but on {size}: {err}"
            ) from None
    return cfg, run_dir


def reachable(host_port: str) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def connect(ray, address: str):
    """ray.init within bounded time; its RayContext (dashboard_url)."""
    if "://" in address:
        raise ConfigError(f"--address {address}: give the cluster's GCS address (host:port, as "
                          "`ray start --head` prints it) or auto, not a URL")  # fmt: skip
    from ray._private.services import canonicalize_bootstrap_address

    # What ray.init will dial: it replaces 127.0.0.1 by this machine's outward address.
    target = canonicalize_bootstrap_address(address)
    if target is None:
        raise ConfigError(f"--address {address}: no running Ray cluster was found")
    if not reachable(target):
        via = f" (Ray dials {target})" if target != address else ""
        raise ConfigError(f"no Ray cluster answers at {address}{via}")
    done: dict = {}

    def init() -> None:
        try:
            done["context"] = ray.init(address=target, logging_level=logging.WARNING)
        except Exception as err:  # reported below, on the caller's thread
            done["error"] = err

    # ray.init retries for minutes when the port answers but is no Ray GCS, so it runs on
    # a thread we can stop waiting for; there it warns that it cannot install its SIGTERM
    # handler, which a launcher that only submits work does not need.
    quiet = NotOnMainThread()
    logging.getLogger("ray._private.worker").addFilter(quiet)
    thread = threading.Thread(target=init, daemon=True)
    thread.start()
    thread.join(INIT_TIMEOUT_S)
    logging.getLogger("ray._private.worker").removeFilter(quiet)
    if "context" not in done:
        why = done.get("error", f"no answer within {INIT_TIMEOUT_S:g} s")
        raise ConfigError(f"cannot join the Ray cluster at {address}: {why}".splitlines()[0])
    return done["context"]


class NotOnMainThread(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "not the main thread" not in record.getMessage()


def check_capacity(nodes: list[dict], needed: int, gpus_per_worker: int) -> None:
    """`needed` workers of 1 CPU (+ GPUs) must fit on the cluster's nodes as they are."""
    alive = [n["Resources"] for n in nodes if n.get("Alive")]
    cpus = sum(r.get("CPU", 0) for r in alive)
    gpus = sum(r.get("GPU", 0) for r in alive)
    if gpus_per_worker and not gpus:
        raise ConfigError(f"--gpus-per-worker {gpus_per_worker}, but the Ray cluster has no GPUs")
    fits = 0
    for r in alive:
        per_node = r.get("CPU", 0)
        if gpus_per_worker:
            per_node = min(per_node, r.get("GPU", 0) // gpus_per_worker)
        fits += int(per_node)
    if needed > fits:
        need = "1 CPU" + (f" + {gpus_per_worker} GPUs" if gpus_per_worker else "")
        raise ConfigError(
            f"{needed} workers of {need} do not fit on the Ray cluster: its {len(alive)} "
            f"nodes ({cpus:g} CPUs, {gpus:g} GPUs) hold {fits}"
        )


def launch_ray(
    recipe: str, overrides: list[str], *, address: str, workers: int, gpus_per_worker: int = 0,
    max_failures: int = 3, min_workers: int | None = None, storage: str | None = None,
    run_dir: Path | None = None, submit: bool = False,
) -> int:  # fmt: skip
    ray = require_ray()
    cfg, run_dir = plan_run(recipe, overrides, workers, min_workers, gpus_per_worker, storage,
                            run_dir)  # fmt: skip
    cfg.launch.ray_address = address
    context = connect(ray, address)
    check_capacity(ray.nodes(), min_workers or workers, gpus_per_worker)
    record = dict(launcher="ray", ray_address=address, workers=workers, min_workers=min_workers,
                  max_failures=max_failures, recipe=recipe)  # fmt: skip
    frozen = freeze_run(cfg, run_dir)
    if submit:
        flags = launch_flags(workers, gpus_per_worker, max_failures, min_workers, run_dir)
        return submit_job(context.dashboard_url, frozen, flags, run_dir, record)
    if not os.environ.get(SUBMITTED_ENV):  # a submitted job's record is already there
        write_launch_record(run_dir, submission_id=None, **record)
    return fit(frozen, run_dir, workers, min_workers, gpus_per_worker, max_failures)


def fit(frozen: Path, run_dir: Path, workers, min_workers, gpus_per_worker, max_failures) -> int:
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    from causeway.launcher.ray_worker import train_loop

    gpus = {"GPU": gpus_per_worker} if gpus_per_worker else {}
    scaling = ScalingConfig(
        num_workers=(min_workers, workers) if min_workers else workers,
        use_gpu=bool(gpus_per_worker),
        resources_per_worker={"CPU": 1, **gpus},
    )
    run_config = RunConfig(
        name=run_dir.name,
        storage_path=str(run_dir.parent),
        failure_config=FailureConfig(max_failures=max_failures),
        # Ray Train V2 turns workers' print() into log records, which its log streaming
        # then shows twice; causeway's step lines are plain prints on rank 0.
        worker_runtime_env={"env_vars": {**forwarded_env(), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"recipe": str(frozen), "run_dir": str(run_dir)},
        scaling_config=scaling,
        run_config=run_config,
    )
    size = f"{min_workers}..{workers}" if min_workers else str(workers)
    print(f"causeway: Ray Train run {run_dir.name} on {size} workers, run dir {run_dir}",
          flush=True)  # fmt: skip
    try:
        result = trainer.fit()
    except TrainingFailedError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"causeway: error: the Ray Train run failed: {first}", file=sys.stderr)
        return 1
    newest = result.checkpoint.path if result.checkpoint else None
    print(f"causeway: finished; newest checkpoint {newest}", flush=True)
    return 0


def forwarded_env() -> dict[str, str]:
    """What the workers need from the launching shell: Ray starts them from the raylet's
    environment, not the driver's."""
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def launch_flags(workers, gpus_per_worker, max_failures, min_workers, run_dir) -> list[str]:
    flags = ["--workers", str(workers), "--gpus-per-worker", str(gpus_per_worker),
             "--max-failures", str(max_failures), "--run-dir", str(run_dir)]  # fmt: skip
    return flags + (["--min-workers", str(min_workers)] if min_workers else [])


def project_root() -> Path:
    """The source checkout causeway runs from, else the current directory: the job's
    working_dir, so the cluster runs this code."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def submit_job(dashboard: str, frozen: Path, flags: list[str], run_dir: Path, record) -> int:
    """The same launch without --submit, as a Ray job whose driver runs on the cluster. It
    trains from the frozen recipe (the overrides are in it) into the same run dir."""
    from ray.job_submission import JobSubmissionClient

    if not dashboard:
        raise ConfigError("the Ray cluster runs no dashboard, which the Jobs API needs "
                          "(start the head with ray[default] installed)")  # fmt: skip
    url = dashboard if "://" in dashboard else f"http://{dashboard}"
    root = project_root()
    excludes = [*EXCLUDES]
    if run_dir.is_relative_to(root):
        excludes.append(str(run_dir.relative_to(root)))
    submission_id = f"causeway-{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    entry = ["python", "-m", "causeway", "launch", "ray", str(frozen), "--address", "auto", *flags]
    env = {**forwarded_env(), SUBMITTED_ENV: submission_id}
    runtime_env = {"working_dir": str(root), "excludes": excludes, "env_vars": env}
    client = JobSubmissionClient(url)
    client.submit_job(entrypoint=shlex.join(entry), runtime_env=runtime_env,
                      submission_id=submission_id)  # fmt: skip
    # `causeway status` and `ray job` talk to the Jobs API at the dashboard's address.
    fields = {**record, "ray_address": url, "cluster_address": record["ray_address"]}
    write_launch_record(run_dir, **fields, submission_id=submission_id)
    print(f"causeway: submitted Ray job {submission_id}, run dir {run_dir}\n"
          f"  follow: ray job logs --follow {submission_id} --address {url}")  # fmt: skip
    return 0
