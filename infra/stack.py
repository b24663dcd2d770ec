"""The local stack behind ``streamrec up|down|status``: which services run, on which ports, with which pids.

State lives in ``<run_dir>/stack.json`` so that a later ``status`` or ``down`` finds what ``up`` started.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from infra.flink_cluster import FlinkCluster
from infra.kafka_broker import KafkaBroker, ensure_topics
from infra.process import ServiceError, pid_alive
from infra.redis_server import AclUser, RedisServer
from streamrec.config import Settings, secret_value


def _state_file(settings: Settings) -> Path:
    return settings.run_dir / "stack.json"


def read_state(settings: Settings) -> dict[str, Any]:
    """What ``up`` recorded (empty when nothing was started)."""
    try:
        return dict(json.loads(_state_file(settings).read_text()))
    except (OSError, ValueError):
        return {}


def write_state(settings: Settings, state: dict[str, Any]) -> None:
    """Record the stack's processes (atomically)."""
    path = _state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def kafka_broker(settings: Settings) -> KafkaBroker:
    """The broker `up` starts, from the stack settings."""
    s = settings.stack
    return KafkaBroker(
        home=settings.run_dir / "kafka",
        jars_dir=settings.path(s.jars_dir),
        port=s.kafka_port,
        controller_port=s.kafka_controller_port,
        heap=s.kafka_heap,
        partitions=settings.kafka.partitions,
        **_scram(settings),
    )


def _scram(settings: Settings) -> dict[str, Any]:
    """With kafka.security_protocol SASL_PLAINTEXT and a SCRAM mechanism: the broker's one SCRAM user."""
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return {}
    if k.security_protocol != "SASL_PLAINTEXT" or not (k.sasl_mechanism or "").startswith("SCRAM-"):
        msg = (
            f"streamrec up starts Kafka with PLAINTEXT or SASL_PLAINTEXT + SCRAM-SHA-256/512 only, not "
            f"{k.security_protocol} {k.sasl_mechanism or ''}; point kafka.bootstrap at your own cluster instead"
        )
        raise ServiceError(msg)
    if not k.sasl_username or not k.sasl_password:
        msg = "kafka.security_protocol SASL_PLAINTEXT needs kafka.sasl_username and kafka.sasl_password"
        raise ServiceError(msg)
    return {
        "scram_users": {k.sasl_username: k.sasl_password.get_secret_value()},
        "scram_mechanism": k.sasl_mechanism,
    }


def redis_server(settings: Settings, users: list[AclUser] | None = None) -> RedisServer:
    """The Redis `up` starts (with ``users``: least-privilege ACL users beside the admin)."""
    s = settings.stack
    password = secret_value(s.redis_password)
    return RedisServer(home=settings.run_dir / "redis", port=s.redis_port, password=password, users=users or [])


def flink_cluster(settings: Settings) -> FlinkCluster:
    """The standalone cluster `up --cluster` starts."""
    s = settings.stack
    return FlinkCluster(
        home=settings.run_dir / "flink",
        rest_port=s.flink_rest_port,
        rpc_port=s.flink_rpc_port,
        slots=s.flink_taskmanager_slots,
    )


def topics(settings: Settings) -> list[str]:
    """Every topic the job reads or writes."""
    k = settings.kafka
    return [k.events_topic, k.dlq_topic, k.items_topic, k.recommendations_topic]


def up(
    settings: Settings, with_cluster: bool = False, say: Any = print, redis_users: list[AclUser] | None = None
) -> dict[str, Any]:
    """Start what is not running yet: Kafka (+ topics), Redis, and the standalone Flink cluster if asked.

    ``redis_users`` are the least-privilege ACL users Redis gets beside its admin (``stack.redis_password``).
    """
    state = read_state(settings)
    timeout = settings.stack.start_timeout_s
    if not pid_alive(state.get("kafka", {}).get("pid")):
        broker = kafka_broker(settings)
        pid = broker.start(timeout)
        state["kafka"] = {"pid": pid, "bootstrap": broker.bootstrap, "log": str(broker.log)}
        write_state(settings, state)
        say(f"kafka   started on {broker.bootstrap} (pid {pid}); log {broker.log}")
    created = ensure_topics(
        state["kafka"]["bootstrap"], topics(settings), settings.kafka.partitions, kafka_broker(settings).client_config()
    )
    if created:
        say(f"kafka   created topics {', '.join(created)} ({settings.kafka.partitions} partitions)")
    if not pid_alive(state.get("redis", {}).get("pid")):
        redis = redis_server(settings, redis_users)
        pid = redis.start(timeout)
        state["redis"] = {"pid": pid, "url": redis.url, "log": str(redis.log)}
        write_state(settings, state)
        say(f"redis   started on {redis.url} (pid {pid}); log {redis.log}")
    if with_cluster and not pid_alive(state.get("flink", {}).get("jobmanager_pid")):
        cluster = flink_cluster(settings)
        jm, tm = cluster.start(max(timeout, 90.0))
        state["flink"] = {
            "jobmanager_pid": jm,
            "taskmanager_pid": tm,
            "rest_url": cluster.rest_url,
            "conf_dir": str(cluster.conf_dir),
            "log_dir": str(cluster.log_dir),
        }
        write_state(settings, state)
        say(
            f"flink   standalone cluster at {cluster.rest_url} (jobmanager {jm}, taskmanager {tm}); "
            f"logs {cluster.log_dir}"
        )
    return state


def down(settings: Settings, say: Any = print) -> None:
    """Stop everything ``up`` started (the job and API too, if running)."""
    from infra.process import stop_pid

    state = read_state(settings)
    for name in ("api", "job"):
        if stop_pid(state.get(name, {}).get("pid")):
            say(f"{name:7} stopped")
    flink = state.get("flink", {})
    if FlinkCluster.stop((flink.get("jobmanager_pid"), flink.get("taskmanager_pid"))):
        say("flink   stopped")
    if KafkaBroker.stop(state.get("kafka", {}).get("pid")):
        say("kafka   stopped")
    if RedisServer.stop(state.get("redis", {}).get("pid")):
        say("redis   stopped")
    write_state(settings, {})


def status(settings: Settings) -> dict[str, Any]:
    """The shape of ARCHITECTURE.md: ``{"kafka": {"bootstrap", "running"}, "redis": {"url", "running"}, ...}``."""
    state = read_state(settings)
    kafka, redis, flink, api = (state.get(k, {}) for k in ("kafka", "redis", "flink", "api"))
    job = state.get("job", {})
    return {
        "kafka": {
            "bootstrap": kafka.get("bootstrap", settings.kafka.bootstrap),
            "running": pid_alive(kafka.get("pid")),
            "pid": kafka.get("pid"),
            "log": kafka.get("log"),
        },
        "redis": {
            "url": _without_password(redis.get("url", settings.redis.url)),
            "running": pid_alive(redis.get("pid")),
            "pid": redis.get("pid"),
            "log": redis.get("log"),
        },
        "flink": {
            "mode": "standalone" if flink else "minicluster",
            "rest_url": flink.get("rest_url"),
            "running": pid_alive(flink.get("jobmanager_pid")) and pid_alive(flink.get("taskmanager_pid")),
            "pids": [p for p in (flink.get("jobmanager_pid"), flink.get("taskmanager_pid")) if p],
            "job_running": pid_alive(job.get("pid")) or bool(job.get("job_id")),
        },
        "api": {
            "url": f"http://{settings.api.host}:{settings.api.port}",
            "running": pid_alive(api.get("pid")),
            "pid": api.get("pid"),
        },
    }


def _without_password(url: str) -> str:
    """A URL fit to print: ``redis://user:secret@host`` -> ``redis://user:***@host``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def isolated_settings(settings: Settings, run_dir: Path) -> Settings:
    """A private stack (demo, benchmarks): free ports, a fresh ``run_dir``, its own registry under it."""
    import shutil

    from infra.process import free_port

    shutil.rmtree(run_dir, ignore_errors=True)
    kafka_port, redis_port = free_port(), free_port()
    stack = {"run_dir": str(run_dir), "kafka_port": kafka_port, "kafka_controller_port": free_port(),
             "redis_port": redis_port}
    return settings.model_copy(
        update={
            "stack": settings.stack.model_copy(update=stack),
            "kafka": settings.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{kafka_port}"}),
            "redis": settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{redis_port}/0"}),
            "api": settings.api.model_copy(update={"port": free_port()}),
            "models": settings.models.model_copy(update={"registry_dir": str(run_dir / "models")}),
        }
    )
