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
from infra.process import free_port, log_tail, pid_alive, spawn, stop_pid
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


class SavepointError(JobError):
    """A savepoint could not be taken, or the path given is not one."""

    def __init__(self, what: str) -> None:
        super().__init__(f"savepoint: {what}")


def _env(settings: Settings, config_path: str | None) -> dict[str, str]:
    # The MiniCluster's own log goes next to the job's, not into the installed pyflink package.
    env = {"PYTHONPATH": python_path(), "FLINK_LOG_DIR": str(settings.run_dir / "flink-log")}
    if config_path:
        env["STREAMREC_CONFIG"] = str(Path(config_path).resolve())
    if settings.kafka.start_from != "committed":  # a rebuild: over whatever the config file says
        env["STREAMREC_KAFKA__START_FROM"] = settings.kafka.start_from
    return env


def start(
    settings: Settings,
    config_path: str | None = None,
    cluster: str | None = None,
    say: Any = print,
    timeout: float = 120.0,
    resume: bool = True,
    from_savepoint: str | None = None,
) -> dict[str, Any]:
    """Start the job (MiniCluster in a background process, or ``flink run -d`` against ``cluster``).

    With ``resume`` (the default), it starts from the latest retained checkpoint (or savepoint in
    ``flink.savepoint_dir``) of an earlier run, if any; ``from_savepoint`` names the one to start from instead
    (an upgrade: the new code and config take over the state by operator uid).
    """
    state = read_state(settings)
    job = state.get("job", {})
    if pid_alive(job.get("pid")) or (job.get("job_id") and _cluster_job_running(job)):
        say(f"job     already running: {job}")
        return job
    log = settings.run_dir / "job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = _env(settings, config_path)
    if from_savepoint and "://" not in from_savepoint and not (Path(from_savepoint) / "_metadata").is_file():
        what = f"{from_savepoint} holds no _metadata: pass the path `job stop --savepoint` printed"
        raise SavepointError(what)
    checkpoint = from_savepoint or (latest_checkpoint(settings) if resume else None)
    if checkpoint:
        # After a crash or a stop: each event's effect on the state is restored exactly, and Kafka
        # offsets rewind to the checkpoint, so nothing is lost or counted twice.
        env["STREAMREC_FLINK__RESTORE_FROM"] = checkpoint
        say(f"job     resuming from {checkpoint}")
    if cluster is None:
        # A REST endpoint of its own, so that `job stop --savepoint` and metrics reach the MiniCluster.
        rest_port = settings.flink.rest_port or free_port()
        env["STREAMREC_FLINK__REST_PORT"] = str(rest_port)
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
        job["rest_url"] = f"http://127.0.0.1:{rest_port}"
    else:
        env.update({"STREAMREC_FLINK__CLUSTER": cluster})
        host_port = cluster.split("://", 1)[-1].rstrip("/")
        cmd = [
            str(flink_home() / "bin" / "flink"),
            "run",
            "-m",
            host_port,
            "-d",
            *(["-s", checkpoint] if checkpoint else []),
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


def rebuild(
    settings: Settings,
    config_path: str | None = None,
    cluster: str | None = None,
    say: Any = print,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Rebuild every user's state from the retained ``events`` (and ``items``) topic into a fresh job.

    The path between job versions whose operator graphs differ (no savepoint maps onto the new graph): the
    running job (if any) stops, the earlier checkpoints and savepoints move aside (``*.before-rebuild-<time>``,
    so that no later ``job start`` resumes the old graph), and the job starts from the earliest retained record
    of both topics, whatever the consumer group had committed. The front-end keeps reading Redis throughout:
    each user's keys are overwritten as the replay reaches them. What the topic no longer retains is not rebuilt.
    """
    stop(settings, say=say)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for folder in (settings.run_path(settings.flink.checkpoint_dir), savepoint_dir(settings)):
        if folder.exists() and any(folder.iterdir()):
            aside = folder.with_name(f"{folder.name}.before-rebuild-{stamp}")
            folder.rename(aside)
            say(f"job     moved {folder} aside to {aside}")
    state = read_state(settings)
    state.pop("savepoint", None)
    write_state(settings, state)
    earliest = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"start_from": "earliest"})})
    job = start(earliest, config_path, cluster=cluster, say=say, timeout=timeout, resume=False)
    say("job     rebuilding every user's state from the earliest retained events")
    return job


def _rest(cluster: str, path: str, method: str = "GET", payload: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(cluster + path, data=data, method=method, headers={"Content-Type": "application/json"})
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


def stop_with_savepoint(
    settings: Settings, target_dir: str | None = None, say: Any = print, timeout: float = 120.0
) -> str:
    """Stop the job with a savepoint (Flink's stop-with-savepoint, REST API); returns the savepoint's path.

    The same call for both modes: the MiniCluster's own REST endpoint (recorded by :func:`start`) or the
    cluster's. The sources stop, a savepoint is taken, the sinks flush and the job finishes; start the
    next version with ``start(..., from_savepoint=path)``. ``target_dir`` defaults to ``flink.savepoint_dir``.
    """
    state = read_state(settings)
    job = state.get("job", {})
    rest = job.get("cluster") or job.get("rest_url")
    if not (rest and job.get("job_id") and status(settings)["running"]):
        raise SavepointError("the job is not running (or was started without a REST endpoint): nothing to stop")
    target = Path(target_dir).resolve() if target_dir else savepoint_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    job_id = job["job_id"]
    try:
        trigger = _rest(rest, f"/jobs/{job_id}/stop", "POST", {"targetDirectory": target.as_uri(), "drain": False})
        deadline = time.monotonic() + timeout
        while True:
            result = _rest(rest, f"/jobs/{job_id}/savepoints/{trigger['request-id']}")
            if result.get("status", {}).get("id") == "COMPLETED":
                break
            if time.monotonic() > deadline:
                what = f"not completed within {timeout:.0f}s; the job keeps running"
                raise SavepointError(what)
            time.sleep(0.3)
    except (OSError, ValueError, KeyError) as exc:
        what = f"the Flink REST API at {rest} failed: {exc}"
        raise SavepointError(what) from exc
    operation = result.get("operation", {})
    if "location" not in operation:
        cause = operation.get("failure-cause", {}).get("stack-trace", str(operation))
        what = f"Flink refused: {cause.strip().splitlines()[0] if cause.strip() else cause}"
        raise SavepointError(what)
    path = re.sub(r"^file:(//)?", "", operation["location"])
    # The job is FINISHED now; the MiniCluster's process returns from the job and exits.
    if job.get("mode") == "minicluster":
        deadline = time.monotonic() + 30
        while pid_alive(job.get("pid")) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop_pid(job.get("pid"))
    state.pop("job", None)
    state["savepoint"] = path
    write_state(settings, state)
    say(f"job     stopped with savepoint {path}")
    return path


def savepoint_dir(settings: Settings) -> Path:
    """Where savepoints go by default (``flink.savepoint_dir``, relative to the run directory)."""
    return settings.run_path(settings.flink.savepoint_dir)


def latest_checkpoint(settings: Settings) -> str | None:
    """The newest completed checkpoint (chk-N with _metadata) or savepoint (in ``flink.savepoint_dir``).

    Savepoints count: a stop-with-savepoint finishes the job, and Flink discards a finished job's checkpoints.
    """
    root = settings.run_path(settings.flink.checkpoint_dir)
    done = [p.parent for p in root.glob("*/chk-*/_metadata")]
    done += [p.parent for p in savepoint_dir(settings).glob("savepoint-*/_metadata")]
    return str(max(done, key=lambda p: p.stat().st_mtime)) if done else None


def status(settings: Settings) -> dict[str, Any]:
    """``{"running", "mode", "job_id", "pids", "checkpoint", "log", "rest_url", "savepoint"}``."""
    state = read_state(settings)
    job = state.get("job", {})
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
        "rest_url": job.get("cluster") or job.get("rest_url"),
        "savepoint": state.get("savepoint"),  # the last one `job stop --savepoint` took
    }
