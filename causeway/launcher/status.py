"""`causeway status RUN_DIR`: where a run stands, read from the files in RUN_DIR; the
scheduler is asked only for the job's state, each query bounded by a short timeout so
that a status never hangs on an unreachable controller."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from causeway.config import ConfigError

# Called like subprocess.run (its default), so tests can run other real commands instead.
Runner = Callable[..., subprocess.CompletedProcess]
DIRECT = "direct (causeway train / torchrun)"
NOT_A_RUN = "is not a causeway run directory (no config.yaml or metrics.jsonl)"
TIMEOUT_S = 5.0


def ask(argv: list[str], runner: Runner, timeout: float) -> tuple[str | None, str]:
    """(stdout, "") when the command succeeds, else (None, why it did not)."""
    try:
        done = runner(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as err:
        missing = isinstance(err, FileNotFoundError)
        return None, f"{argv[0]} " + ("not found" if missing else f"timed out after {timeout:g} s")
    if done.returncode != 0:
        # Slurm's last stderr line is the fatal one; earlier ones say how it got there.
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        return None, lines[-1] if lines else f"{argv[0]} exited with {done.returncode}"
    return done.stdout, ""


def parse_scontrol(text: str) -> dict[str, Any]:
    """JobState and Restarts of the first job (of an array, say) in `scontrol show job`."""
    first = text.split("\n\n")[0]
    state, restarts = (re.search(rf"\b{k}=(\w+)", first) for k in ("JobState", "Restarts"))
    return {"state": state and state[1], "restarts": int(restarts[1]) if restarts else None}


def slurm_state(job_id: str, runner: Runner = subprocess.run, timeout: float = TIMEOUT_S) -> dict:
    out, why = ask(["squeue", "-h", "-j", str(job_id), "-o", "%T"], runner, timeout)
    if out and out.strip():
        return {"state": out.split()[0], "restarts": None}
    if why.endswith("not found") or "timed out" in why:
        return {"state": f"unknown ({why})", "restarts": None}  # scontrol would fare no better
    # squeue forgets finished jobs at once; scontrol keeps them for MinJobAge (300 s).
    out, why = ask(["scontrol", "show", "job", str(job_id)], runner, timeout)
    parsed = parse_scontrol(out or "")
    parsed["state"] = parsed["state"] or f"unknown ({why or 'no JobState from scontrol'})"
    return parsed


def ray_state(address: str | None, submission_id: str | None, timeout: float = TIMEOUT_S) -> str:
    if not address or not submission_id:
        return "unknown (launch.json has no ray_address or submission_id)"
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        return "unknown (ray not installed: pip install 'causeway[ray]')"
    answer = {"state": f"unknown (ray at {address} did not answer in {timeout:g} s)"}

    def query() -> None:
        try:
            status = JobSubmissionClient(address).get_job_status(submission_id)
            answer["state"] = str(getattr(status, "value", status))
        except Exception as err:  # any failure to reach the cluster reads as "unknown"
            answer["state"] = f"unknown ({type(err).__name__}: {str(err).splitlines()[0]})"

    # A daemon thread: an unreachable address must neither keep us waiting nor alive.
    (worker := threading.Thread(target=query, daemon=True)).start()
    worker.join(timeout)
    return answer["state"]


def read_mapping(path: Path) -> dict | None:
    """A JSON or YAML file's mapping (YAML reads JSON); None if missing or unreadable."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def json_lines(data: bytes) -> list[dict]:
    records = []
    for line in data.split(b"\n"):
        with contextlib.suppress(ValueError):  # a line being written, or cut short by a crash
            records.append(json.loads(line))
    return [r for r in records if isinstance(r, dict)]


def tail_records(path: Path, keys: tuple[str, ...], window: int = 1 << 16) -> list[dict]:
    """Records at the end of a JSON-lines file: reads only the tail, growing it until each
    of `keys` appears or the whole file is read, so long runs stay cheap to ask about."""
    if not path.is_file():
        return []
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        while True:
            handle.seek(start := max(0, size - window))
            data = handle.read()
            records = json_lines(data.partition(b"\n")[2] if start else data)  # from mid-line
            if start == 0 or all(any(k in r for r in records) for k in keys):
                return records
            window *= 4


def checkpoints(run_dir: Path) -> tuple[int | None, Path | None, list[str]]:
    """(step, path) of the newest committed checkpoint and the partial ones' names."""
    from causeway.checkpoint.commit import is_committed
    from causeway.checkpoint.discovery import step_dirs

    found = step_dirs(run_dir)  # not newest_committed(): its warning is meant for resumes
    committed = [(step, path) for step, path in found if is_committed(path)] or [(None, None)]
    return (*committed[-1], [path.name for _, path in found if not is_committed(path)])


def attempts_summary(path: Path) -> dict[str, Any]:
    attempts = json_lines(path.read_bytes()) if path.is_file() else []
    n, requeues = len(attempts), [a.get("slurm_restart_count") or 0 for a in attempts]
    return {"attempts": n, "restarts": max(n - 1, 0), "slurm_requeues": max(requeues, default=0)}


def scheduler_state(launch: dict) -> dict | None:
    if launch.get("launcher") == "slurm" and launch.get("job_id"):
        return slurm_state(str(launch["job_id"]))
    if launch.get("launcher") == "ray":
        return {"state": ray_state(launch.get("ray_address"), launch.get("submission_id"))}
    return None  # direct and local runs have no scheduler to ask


def status_record(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    # launch.json alone is a run whose job has not started yet (Slurm pending, say).
    if not any((run_dir / f).is_file() for f in ("config.yaml", "metrics.jsonl", "launch.json")):
        raise ConfigError(f"{run_dir} {NOT_A_RUN}")
    launch = read_mapping(run_dir / "launch.json") or {}
    # Launchers freeze recipe.yaml at submission; training writes config.yaml on start.
    config = read_mapping(run_dir / "config.yaml") or read_mapping(run_dir / "recipe.yaml") or {}
    records = tail_records(run_dir / "metrics.jsonl", ("loss", "tokens_per_s"))
    latest = lambda key: next((r[key] for r in reversed(records) if key in r), None)
    ckpt_step, ckpt, partial = checkpoints(run_dir)
    total = (config.get("train") or {}).get("steps")
    step, stop = latest("step"), read_mapping(run_dir / "stop.json")
    if stop is not None:  # a stop record outlives the attempt that wrote it
        stop["stale"] = step is not None and step > (stop.get("step") or 0)
    record = {
        "run_dir": str(run_dir), "name": config.get("name"), "launch": launch or None,
        "launcher": launch.get("launcher", DIRECT),
        "job_id": launch.get("job_id") or launch.get("submission_id"),
        "scheduler": scheduler_state(launch), "step": step, "total_steps": total,
        **{key: latest(key) for key in ("loss", "val_loss", "tokens_per_s")},
        "checkpoint": str(ckpt) if ckpt else None, "checkpoint_step": ckpt_step,
        "partial_checkpoints": partial, **attempts_summary(run_dir / "attempts.jsonl"),
        "stop": stop, "finished": ckpt_step is not None and ckpt_step == total,
    }  # fmt: skip
    return {**record, "state": verdict(record)}


def verdict(r: dict[str, Any]) -> str:
    if r["finished"]:
        return "finished"
    if (stop := r["stop"]) is not None and not stop["stale"]:
        return f"stopped at step {stop.get('step')} on {stop.get('reason')}; resume continues"
    if r["scheduler"] is not None:
        return r["scheduler"]["state"]
    return "not finished (running, or interrupted: see its logs)"


def run_status(run_dir: Path) -> str:
    r = status_record(run_dir)
    scheduler, stop = r["scheduler"] or {}, r["stop"]
    launcher = r["launcher"] + (f", job {r['job_id']}" if r["job_id"] else "")
    launcher += f": {scheduler['state']}" if scheduler else ""
    launcher += f" (Restarts={scheduler['restarts']})" if scheduler.get("restarts") else ""
    progress = f"step {r['step'] or 0}/{r['total_steps'] or '?'}"
    for key, spec in (("loss", ".4g"), ("val_loss", ".4g"), ("tokens_per_s", ",.0f")):
        progress += f" | {key} {r[key]:{spec}}" if r[key] is not None else ""
    ckpt = f"step {r['checkpoint_step']} ({r['checkpoint']})" if r["checkpoint"] else "none"
    lines = {
        "run": r["run_dir"] + (f" ({r['name']})" if r["name"] else ""),
        "launcher": launcher,
        "progress": progress,
        "checkpoint": f"{ckpt}, {len(r['partial_checkpoints'])} partial",
        "attempts": "{attempts} ({restarts} restarts, {slurm_requeues} Slurm requeues)".format(**r),
    }
    if stop is not None:
        note = " (an earlier attempt's; resumed since)" if stop["stale"] else ""
        lines["stop"] = f"step {stop.get('step')} on {stop.get('reason')}{note}"
    lines["state"] = r["state"]
    return "\n".join(f"{label:<12}{text}" for label, text in lines.items())
