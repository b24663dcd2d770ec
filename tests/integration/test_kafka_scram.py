"""Kafka SASL/SCRAM against a real KRaft broker: refused without the right password; with it, events go through
the CLI producer and the Flink job into Redis (as the Redis ACL job user); no secret in logs, argv or status JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from infra.kafka_broker import KafkaBroker, ensure_topics
from infra.process import free_port
from infra.redis_server import AclUser, RedisServer
from jobs import launcher
from jobs.producer import EventProducer
from model_export.data.event_log import read_events
from serving.store import JOB_ACL_RULES, decode_user, key
from streamrec.config import PROJECT_ROOT, load_config

pytestmark = pytest.mark.integration

JARS = PROJECT_ROOT / ".cache" / "jars"
# Distinctive secrets (a space, "=" and "]" prove the quoting), grepped for below.
KAFKA_ADMIN_PW = "kafka-admin-pw-5e0c1"
KAFKA_APP_PW = "kafka app pw=]a9d4"
REDIS_ADMIN_PW = "redis-admin-pw-77b3"
REDIS_JOB_PW = "redis-job-pw-c81f"
SECRETS = (KAFKA_ADMIN_PW, KAFKA_APP_PW, REDIS_ADMIN_PW, REDIS_JOB_PW)


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(
        home=tmp_path_factory.mktemp("kafka-scram"),
        jars_dir=JARS,
        port=free_port(),
        controller_port=free_port(),
        scram_users={"admin": KAFKA_ADMIN_PW, "streamrec": KAFKA_APP_PW},
    )
    pid = broker.start()
    broker.pid = pid  # type: ignore[attr-defined]
    yield broker
    KafkaBroker.stop(pid)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        home=tmp_path_factory.mktemp("redis-scram"),
        port=free_port(),
        password=REDIS_ADMIN_PW,
        users=[AclUser("streamrec-job", REDIS_JOB_PW, JOB_ACL_RULES)],
    )
    pid = server.start()
    server.pid = pid  # type: ignore[attr-defined]
    yield server
    RedisServer.stop(pid)


def sasl(password: str, mechanism: str = "SCRAM-SHA-256", user: str = "streamrec") -> dict:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")},
    )


def command_lines() -> list[str]:
    """Every process's argv that this user can read (`ps -ef`)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return out


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_wrong_password_and_plaintext_are_refused(scram_kafka: KafkaBroker) -> None:
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        producer = KafkaProducer(bootstrap_servers=scram_kafka.bootstrap, **sasl(KAFKA_APP_PW, mechanism))
        producer.send("scram-probe", b"ok").get(timeout=30)
        producer.close()
    with pytest.raises(KafkaError):
        KafkaAdminClient(
            bootstrap_servers=scram_kafka.bootstrap, request_timeout_ms=5000, **sasl("wrong-password")
        ).list_topics()
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=scram_kafka.bootstrap, request_timeout_ms=5000).list_topics()
    log = scram_kafka.log.read_text()
    assert "Failed authentication" in log and "invalid credentials" in log
    assert not leaks(log)
    assert not any(leaks(c) for c in command_lines())
    assert oct((scram_kafka.home / "server.properties").stat().st_mode & 0o777) == "0o600"
    assert not (scram_kafka.home / "format.args").exists()


def test_events_go_through_the_scram_broker_and_the_job_into_redis_and_no_secret_leaks(
    scram_kafka: KafkaBroker, acl_redis: RedisServer, tmp_path: Path
) -> None:
    tag = f"scram-{os.getpid()}"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap": scram_kafka.bootstrap,
                    "events_topic": f"events-{tag}",
                    "dlq_topic": f"events.dlq-{tag}",
                    "items_topic": f"items-{tag}",
                    "recommendations_topic": f"recommendations-{tag}",
                    "consumer_group": f"streamrec-{tag}",
                    "security_protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_username": "streamrec",
                    "sasl_password": KAFKA_APP_PW,
                },
                "redis": {"url": acl_redis.url, "username": "streamrec-job", "password": REDIS_JOB_PW},
                "flink": {"checkpoint_interval_ms": 1000},
                "job": {"flush_interval_ms": 50},
                "stack": {"run_dir": str(tmp_path / "run")},
                "models": {"registry_dir": str(tmp_path / "models")},
            }
        )
    )
    config.chmod(0o600)
    settings = load_config(config, environ={})
    k = settings.kafka
    ensure_topics(
        k.bootstrap, [k.events_topic, k.dlq_topic, k.items_topic, k.recommendations_topic], 2, sasl(KAFKA_APP_PW)
    )
    admin = acl_redis.client()
    t0 = 1_700_000_000_000
    launcher.start(settings, str(config), say=lambda *_: None)
    try:
        # The CLI's producer path, as an operator runs it ...
        for n, (user, item) in enumerate([("s1", "i1"), ("s1", "i2"), ("s2", "i3")]):
            proc = cli(config, "produce", "--user", user, "--item", item, "--type", "view", "--ts", str(t0 + n))
            assert proc.returncode == 0, proc.stderr
            assert not leaks(proc.stdout + proc.stderr)
        # ... and the SDK with the same client settings.
        with EventProducer(k.bootstrap, k.events_topic, **sasl(KAFKA_APP_PW, "SCRAM-SHA-512")) as p:
            p.send({"user_id": "s2", "item_id": "i4", "type": "click", "ts": t0 + 10})
        want = {"s1": (2, ["i1", "i2"]), "s2": (2, ["i3", "i4"])}
        deadline = time.monotonic() + 120
        got: dict = {}
        while time.monotonic() < deadline and got != want:
            views = {u: decode_user(admin.hgetall(key("user", u))) for u in want}
            got = {u: v and (v["events"], v["recent"]) for u, v in views.items()}
            time.sleep(0.5)
        assert got == want

        # The trainer's event log reader, with the SASL settings.
        events = read_events(k.bootstrap, k.events_topic, **sasl(KAFKA_APP_PW, "SCRAM-SHA-512"))
        assert [(e["user_id"], e["item_id"]) for e in events] == [
            ("s1", "i1"),
            ("s1", "i2"),
            ("s2", "i3"),
            ("s2", "i4"),
        ]

        # No secret on any command line while everything runs, nor in the status JSON.
        assert not [c for c in command_lines() if leaks(c)]
        for args in (("status", "--json"), ("job", "status", "--json")):
            proc = cli(config, *args)
            assert proc.returncode == 0, proc.stderr
            json.loads(proc.stdout)
            assert not leaks(proc.stdout + proc.stderr), args
    finally:
        launcher.stop(settings, say=lambda *_: None)
    # Nor in any log or file the job left behind (its log, the MiniCluster's logs, checkpoints).
    run_files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()]
    logs = "".join(f.read_text(errors="replace") for f in run_files if f.suffix == ".log")
    assert "sasl.jaas.config = [hidden]" in logs  # the job's Kafka clients had the credentials, and hid them
    for f in run_files:
        assert not leaks(f.read_bytes().decode(errors="replace")), f


def test_up_starts_a_scram_broker_and_redis_acl_users_and_down_stops_them(tmp_path: Path) -> None:
    api_pw = "redis-api-pw-0e6a"
    kp, rp = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")},
        "STREAMREC_STACK__RUN_DIR": str(tmp_path),
        "STREAMREC_STACK__KAFKA_PORT": str(kp),
        "STREAMREC_STACK__KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMREC_STACK__REDIS_PORT": str(rp),
        "STREAMREC_KAFKA__BOOTSTRAP": f"127.0.0.1:{kp}",
        "STREAMREC_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMREC_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMREC_KAFKA__SASL_USERNAME": "streamrec",
        "STREAMREC_KAFKA__SASL_PASSWORD": KAFKA_APP_PW,
        "STREAMREC_REDIS__URL": f"redis://127.0.0.1:{rp}/0",
        "STREAMREC_STACK__REDIS_PASSWORD": REDIS_ADMIN_PW,
        "STREAMREC_REDIS__USERNAME": "streamrec-job",
        "STREAMREC_REDIS__PASSWORD": REDIS_JOB_PW,
        "STREAMREC_API__REDIS_USERNAME": "streamrec-api",
        "STREAMREC_API__REDIS_PASSWORD": api_pw,
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "streamrec.cli", *args], env=env, capture_output=True, text=True, timeout=180
        )
        assert not leaks(proc.stdout + proc.stderr) and api_pw not in proc.stdout + proc.stderr, args
        return proc

    try:
        up = run("up")
        assert up.returncode == 0, up.stderr
        assert not [c for c in command_lines() if leaks(c) or api_pw in c]
        st = json.loads(run("status", "--json").stdout)
        assert st["kafka"]["running"] and st["redis"]["running"]
        for f in ("kafka/server.properties", "redis/redis.conf", "redis/users.acl"):
            assert (tmp_path / f).stat().st_mode & 0o777 == 0o600, f

        # Kafka: only SCRAM clients; `up` created the topics through SASL.
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{kp}", **sasl(KAFKA_APP_PW))
        assert {"events", "events.dlq", "items", "recommendations"} <= set(admin.list_topics())
        admin.close()
        # `streamrec users forget` goes through SASL too: a forget record keyed by the user.
        forget = run("users", "forget", "u 1", "--json")
        assert forget.returncode == 0, forget.stderr
        assert json.loads(forget.stdout)["status"] == "scheduled"
        consumer = KafkaConsumer(
            "events", bootstrap_servers=f"127.0.0.1:{kp}", auto_offset_reset="earliest", group_id=None,
            consumer_timeout_ms=5000, **sasl(KAFKA_APP_PW),
        )
        records = [(m.key, json.loads(m.value)) for m in consumer]
        consumer.close()
        assert [(k, {f: v[f] for f in ("user_id", "type")}) for k, v in records] == [
            (b"u 1", {"user_id": "u 1", "type": "forget"})
        ]

        # Redis: the admin, the stream's writer user and the read-only API user, each with its password.
        def user(name: str | None, password: str | None) -> redis.Redis:
            return redis.Redis(host="127.0.0.1", port=rp, username=name, password=password, socket_timeout=5)

        user("streamrec-job", REDIS_JOB_PW).set(key("rec", "u1"), "{}")
        assert user("streamrec-api", api_pw).get(key("rec", "u1")) == b"{}"
        with pytest.raises(redis.exceptions.NoPermissionError):
            user("streamrec-api", api_pw).delete(key("rec", "u1"))
        with pytest.raises(redis.exceptions.NoPermissionError):
            user("streamrec-job", REDIS_JOB_PW).flushall()
        with pytest.raises(redis.AuthenticationError):
            user(None, None).get(key("rec", "u1"))
        users = {u.decode() if isinstance(u, bytes) else u for u in user(None, REDIS_ADMIN_PW).acl_users()}
        assert users == {"default", "streamrec-api", "streamrec-job"}
    finally:
        down = run("down")
    assert down.returncode == 0
    st = json.loads(run("status", "--json").stdout)
    assert not st["kafka"]["running"] and not st["redis"]["running"]
