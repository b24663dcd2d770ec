"""``streamrec job start|stop|status``: run the interest job on the embedded MiniCluster or submit it to a cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from infra.flink_cluster import flink_home, python_path
from infra.process import log_tail, pid_alive, spawn, stop_pid
from infra.stack import read_state, write_state
from jobs.errors import JobError
from streamrec.config import PROJECT_ROOT, Settings

JOB_LABEL = "streamrec-interest"  # jobs.interest.JOB_NAME, without importing PyFlink here
SUBMITTED = re.compile(r"(?:submitted as job|JobID)\s+([0-9a-f]{32})")


class JobStartError(JobError):
    """The job did not reach RUNNING; carries the log tail."""

    def __init__(self, what: str, log: Path | str) -> None:
        tail = log_tail(log) if isinstance(log, Path) else log
        super().__init__(f"the interest job did not start: {what}\n{tail}")


def _env(settings: Settings, config_path: str | None) -> dict[str, str]:
    # The MiniCluster's own log goes next to the job's, not into the installed pyflink package.
    env = {"PYTHONPATH": python_path(), "FLINK_LOG_DIR": str(settings.run_dir / "flink-log")}
    if config_path:
        env["STREAMREC_CONFIG"] = str(Path(config_path).resolve())
    return env


def start(
    settings: Settings,
    config_path: str | None = None,
    cluster: str | None = None,
    say: Any = print,
    timeout: float = 120.0,
    resume: bool = True,
) -> dict[str, Any]:
    """Start the job (MiniCluster in a background process, or ``flink run -d`` against ``cluster``).

    With ``resume`` (the default), it starts from the latest retained checkpoint of an earlier run, if any.
    """
    state = read_state(settings)
    job = state.get("job", {})
    if pid_alive(job.get("pid")) or (job.get("job_id") and _cluster_job_running(job)):
        say(f"job     already running: {job}")
        return job
    log = settings.run_dir / "job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = _env(settings, config_path)
    checkpoint = latest_checkpoint(settings) if resume else None
    if checkpoint:
        # After a crash or a stop: each event's effect on the state is restored exactly, and Kafka
        # offsets rewind to the checkpoint, so nothing is lost or counted twice.
        env["STREAMREC_FLINK__RESTORE_FROM"] = checkpoint
        say(f"job     resuming from {checkpoint}")
    if cluster is None:
        start_at = log.stat().st_size if log.exists() else 0
        pid = spawn([sys.executable, "-c", "from jobs.interest import main; main()"], log, env=env, cwd=PROJECT_ROOT)
        deadline = time.monotonic() + timeout
        job_id = None
        while time.monotonic() < deadline and job_id is None:
            if not pid_alive(pid):
                raise JobStartError("the job process exited", log)
            with open(log, "rb") as f:
                f.seek(start_at)
                m = SUBMITTED.search(f.read().decode(errors="replace"))
            job_id = m.group(1) if m else None
            time.sleep(0.3)
        if job_id is None:
            stop_pid(pid)
            what = f"no job id within {timeout:.0f}s"
            raise JobStartError(what, log)
        job = {"mode": "minicluster", "pid": pid, "job_id": job_id, "log": str(log), "restored_from": checkpoint}
    else:
        env.update({"STREAMREC_FLINK__CLUSTER": cluster})
        host_port = cluster.split("://", 1)[-1].rstrip("/")
        cmd = [
            str(flink_home() / "bin" / "flink"),
            "run",
            "-m",
            host_port,
            "-d",
            "-py",
            str(PROJECT_ROOT / "jobs" / "interest.py"),
            "-pyexec",
            sys.executable,
            "-pyclientexec",
            sys.executable,
        ]
        proc = subprocess.run(
            cmd, env={**os.environ, **env}, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
        )
        out = proc.stdout + proc.stderr
        log.write_text(out)
        m = SUBMITTED.search(out)
        if proc.returncode != 0 or not m:
            what = f"`flink run` exited {proc.returncode}"
            raise JobStartError(what, out[-3000:])
        job = {
            "mode": "cluster",
            "cluster": cluster.rstrip("/"),
            "job_id": m.group(1),
            "log": str(log),
            "restored_from": checkpoint,
        }
    state["job"] = job
    write_state(settings, state)
    say(f"job     {JOB_LABEL} running on the {job['mode']} as {job['job_id']}; log {log}")
    return job


def _rest(cluster: str, path: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(cluster + path, method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if body else {}


def _cluster_job_running(job: dict[str, Any]) -> bool:
    try:
        return _rest(job["cluster"], f"/jobs/{job['job_id']}").get("state") in {
            "RUNNING",
            "CREATED",
            "RESTARTING",
        }
    except (OSError, KeyError, ValueError):
        return False


def stop(settings: Settings, say: Any = print) -> bool:
    """Stop the job: kill the MiniCluster process, or cancel the cluster job."""
    state = read_state(settings)
    job = state.pop("job", {})
    stopped = False
    if job.get("mode") == "minicluster":
        stopped = stop_pid(job.get("pid"))
    elif job.get("mode") == "cluster" and _cluster_job_running(job):
        _rest(job["cluster"], f"/jobs/{job['job_id']}?mode=cancel", method="PATCH")
        stopped = True
    write_state(settings, state)
    say("job     stopped" if stopped else "job     was not running")
    return stopped


def latest_checkpoint(settings: Settings) -> str | None:
    """The newest completed checkpoint (a chk-N folder with _metadata) under the checkpoint dir."""
    root = Path(settings.flink.checkpoint_dir)
    root = root if root.is_absolute() else settings.run_dir / root
    done = [p.parent for p in root.glob("*/chk-*/_metadata")]
    return str(max(done, key=lambda p: p.stat().st_mtime)) if done else None


def status(settings: Settings) -> dict[str, Any]:
    """``{"running", "mode", "job_id", "pids", "checkpoint", "log"}``."""
    job = read_state(settings).get("job", {})
    if job.get("mode") == "cluster":
        running = _cluster_job_running(job)
        flink = read_state(settings).get("flink", {})
        pids = [p for p in (flink.get("jobmanager_pid"), flink.get("taskmanager_pid")) if p]
    else:
        running = pid_alive(job.get("pid"))
        pids = [job["pid"]] if job.get("pid") else []
    return {
        "running": running,
        "mode": job.get("mode"),
        "job_id": job.get("job_id"),
        "pids": pids,
        "checkpoint": latest_checkpoint(settings),
        "log": job.get("log"),
    }
