"""Faults while events flow: the Kafka broker restarted mid-stream, Redis away for 30 s. Nothing is lost.

Each test has its own broker or Redis (the session's must stay up for the other tests), sends events from
a producer thread while the fault happens, and checks exactly-once for every user: ``user:{id}.events`` in
Redis equals the valid events in Kafka, which equal the events sent. Recovery times are printed and kept in
``.streamrec/reliability.json`` (``reliability_report``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer

from infra.kafka_broker import KafkaBroker
from infra.process import free_port, port_in_use
from infra.redis_server import RedisServer
from jobs import launcher
from jobs.producer import EventProducer
from serving.api import create_app
from serving.store import connect, key
from streamrec.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.faults]

USERS = 20


def events(start: int, n: int, tag: str) -> list[dict]:
    return [
        {"user_id": f"{tag}{i % USERS}", "item_id": f"m{i % 53}", "type": "click", "ts": 1_700_000_000_000 + i,
         "seq": i}
        for i in range(start, start + n)
    ]


def counts(r, users) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.hget(key("user", u), "events")
    return {u: int(v or 0) for u, v in zip(users, pipe.execute(), strict=True)}


def wait_for(what: str, check: Callable[[], object], timeout_s: float = 180.0, every_s: float = 0.1) -> float:
    """Poll until check() is truthy; returns the monotonic time it became so."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except Exception:  # noqa: BLE001 - a service still coming back
            pass
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class PacedProducer(threading.Thread):
    """Sends events at ``rate``/s in the background until the batch ends or ``stop()``; all must be acknowledged."""

    def __init__(self, bootstrap: str, topic: str, batch: list[dict], rate: float) -> None:
        super().__init__(daemon=True)
        # Reconnect within a second once the broker is back (kafka-python's default backs off up to 30 s).
        self.producer = EventProducer(bootstrap, topic, reconnect_backoff_max_ms=1000)
        self.batch, self.rate = batch, rate
        self.sent = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        for i, e in enumerate(self.batch):
            if self.stopping.is_set():
                break
            self.producer.send(e)
            self.sent = i + 1
            ahead = (i + 1) / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        self.producer.flush()

    def finish(self) -> list[dict]:
        """Stop sending; the events sent, once every one is acknowledged."""
        self.stopping.set()
        self.join(timeout=180)
        assert not self.is_alive(), "the producer did not get every event acknowledged"
        self.producer.close()
        return self.batch[: self.sent]


def topic_counts(bootstrap: str, topic: str, expect: int) -> tuple[Counter, int]:
    """Per-user counts of the events in the topic (the ground truth the job must match), and duplicates."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=1000, group_id=None
    )
    seqs: list[int] = []
    by_user: Counter = Counter()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seqs) < expect:
        for m in consumer:
            e = json.loads(m.value)
            seqs.append(e["seq"])
            by_user[e["user_id"]] += 1
    consumer.close()
    return by_user, len(seqs) - len(set(seqs))


def rest(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def job_metric(job: dict, metric: str) -> int:
    """Sum of an operator metric over every vertex and subtask of the running job (Flink REST)."""
    base = f"{job['rest_url']}/jobs/{job['job_id']}"
    total = 0
    for v in rest(base)["vertices"]:  # type: ignore[index]
        ids = [m["id"] for m in rest(f"{base}/vertices/{v['id']}/metrics") if m["id"].endswith("." + metric)]  # type: ignore[union-attr, index]
        if ids:
            values = rest(f"{base}/vertices/{v['id']}/metrics?get=" + ",".join(quote(i) for i in ids))
            total += sum(int(float(x["value"])) for x in values)  # type: ignore[union-attr, index]
    return total


def failures(job: dict) -> list[str]:
    """The job's failures so far (each one restarted it): its exception history, name and stack trace."""
    history = rest(f"{job['rest_url']}/jobs/{job['job_id']}/exceptions")["exceptionHistory"]  # type: ignore[index]
    return [f"{entry['exceptionName']}: {entry.get('stacktrace', '')}" for entry in history["entries"]]


# --- the Kafka broker restarted in mid-stream ------------------------------------------------------------


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[tuple[KafkaBroker, list[int]]]:
    broker = KafkaBroker(
        home=tmp_path / "kafka", jars_dir=PROJECT_ROOT / ".cache" / "jars", port=free_port(),
        controller_port=free_port(),
    )
    pids = [broker.start()]
    yield broker, pids
    KafkaBroker.stop(pids[-1])


def restart_broker(broker: KafkaBroker, pids: list[int], how: str, r, users: list[str]) -> dict[str, float]:
    """Stop the broker (``kill -9`` or a controlled shutdown), relaunch it 5 s later on the same port and data
    dir, and time the job's first fresh Redis write from the relaunch (the broker's own readiness check is slow
    to notice a restarted broker, so the job is watched in the meantime)."""
    if how == "sigkill":
        os.killpg(os.getpgid(pids[-1]), signal.SIGKILL)
    else:
        KafkaBroker.stop(pids[-1])  # SIGTERM: controlled shutdown
    time.sleep(5)
    applied_at_launch = sum(counts(r, users).values())
    launched_at, before = time.monotonic(), len(pids)
    starter = threading.Thread(target=lambda: pids.append(broker.start()))
    starter.start()
    listening: list[float] = []

    def fresh() -> bool:
        if not listening and port_in_use(broker.port):
            listening.append(time.monotonic())
        return sum(counts(r, users).values()) > applied_at_launch

    first_fresh = wait_for(f"a fresh write after the broker's {how} restart", fresh, 120, every_s=0.05)
    starter.join(timeout=120)
    assert len(pids) == before + 1, "the broker did not come back"
    return {
        f"{how}_broker_listening_s": round(listening[0] - launched_at, 1) if listening else -1.0,
        f"{how}_first_fresh_write_s": round(first_fresh - launched_at, 1),
    }


def test_kafka_broker_restarts_mid_stream(make_settings, own_kafka, reliability_report):
    broker, pids = own_kafka
    settings, config = make_settings(kafka={"bootstrap": broker.bootstrap}, flink={"checkpoint_interval_ms": 1000})
    r = connect(settings.redis.url)
    r.flushdb()
    warmup = events(0, 100, "k")
    users = sorted({e["user_id"] for e in warmup})
    job = launcher.start(settings, str(config), say=lambda *_: None)
    try:
        with EventProducer(broker.bootstrap, settings.kafka.events_topic) as p:
            for e in warmup:
                p.send(e)
        wait_for("the warm-up events", lambda: sum(counts(r, users).values()) == len(warmup), 120)

        # 50 events/s from before the first fault until a few seconds after the job is fresh again.
        producer = PacedProducer(broker.bootstrap, settings.kafka.events_topic, events(100, 10_000, "k"), rate=50)
        producer.start()
        time.sleep(4)
        times = restart_broker(broker, pids, "sigkill", r, users)
        time.sleep(4)
        times |= restart_broker(broker, pids, "sigterm", r, users)
        time.sleep(3)
        sent = warmup + producer.finish()
        stopped_at = time.monotonic()

        want = Counter(e["user_id"] for e in sent)
        in_topic, duplicates = topic_counts(broker.bootstrap, settings.kafka.events_topic, len(sent))
        assert duplicates == 0
        assert in_topic == want  # the producer lost nothing, and wrote nothing twice
        drained = wait_for("every event applied", lambda: counts(r, users) == dict(want), 180)
        time.sleep(2)  # and no late double count
        assert counts(r, users) == dict(want)
        assert launcher.status(settings)["running"]
        reliability_report(
            "kafka broker kill -9, then a graceful restart (5 s down each)",
            sent=len(sent),
            applied=sum(counts(r, users).values()),
            dead_lettered=0,
            **times,
            backlog_drained_after_producer_stop_s=round(max(0.0, drained - stopped_at), 1),
            job_restarts=len(failures(job)),
        )
    finally:
        launcher.stop(settings, say=lambda *_: None)


# --- Redis away for a while ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "outage_s", "retry_timeout_s"),
    [
        ("ride-through", 30, 60.0),  # the writer's backoff outlasts the outage: no restart
        ("give-up", 12, 3.0),  # the bound is shorter: the task fails, Flink restarts it from the checkpoint
    ],
)
def test_redis_outage(make_settings, tmp_path, reliability_report, name, outage_s, retry_timeout_s):
    server = RedisServer(home=tmp_path / "redis", port=free_port())
    pid: int | None = server.start()
    settings, config = make_settings(
        redis={"url": server.url}, job={"redis_retry_timeout_s": retry_timeout_s, "redis_backoff_max_ms": 2000}
    )
    r = connect(settings.redis.url, timeout_s=2)
    warmup = events(0, 100, "d")
    users = sorted({e["user_id"] for e in warmup})
    job = launcher.start(settings, str(config), say=lambda *_: None)
    try:
        with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
            for e in warmup:
                p.send(e)
        wait_for("the warm-up events", lambda: sum(counts(r, users).values()) == len(warmup), 120)
        with TestClient(create_app(settings)) as api:
            assert api.get("/v1/users/d1").json()["events"] == Counter(e["user_id"] for e in warmup)["d1"]
            RedisServer.stop(pid)  # SIGTERM: Redis writes its append-only file and exits
            pid = None
            down_at = time.monotonic()
            # 25 events/s all through the outage, and on until the job is fresh again.
            k = settings.kafka
            producer = PacedProducer(k.bootstrap, k.events_topic, events(100, 10_000, "d"), rate=25)
            producer.start()
            # Meanwhile the API answers 503 with a clear JSON body on every endpoint.
            for path in ("/healthz", "/v1/users/d1", "/v1/users/d1/recommendations", "/v1/items/m1"):
                resp = api.get(path)
                assert resp.status_code == 503, path
                body = resp.json()
                assert body["status"] == "unavailable" and "Redis is unreachable" in body["detail"], body
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
            pid = server.start()  # same port and data dir
            back_at = time.monotonic()
            first_fresh = wait_for(
                "a fresh write", lambda: sum(counts(r, users).values()) > len(warmup), 120, every_s=0.05
            )
            time.sleep(2)
            sent = warmup + producer.finish()
            want = Counter(e["user_id"] for e in sent)
            drained = wait_for("every event applied", lambda: counts(r, users) == dict(want), 180)
            time.sleep(2)  # and no late double count
            assert counts(r, users) == dict(want)
            # The API recovered by itself and shows the fresh state.
            resp = api.get("/v1/users/d1")
            assert resp.status_code == 200 and resp.json()["events"] == want["d1"]
        assert launcher.status(settings)["running"]
        failed = failures(job)
        if name == "ride-through":
            assert failed == []
            # Flink's REST API refreshes metrics every 10 s (the first ask starts the fetch): poll.
            wait_for("the retry metrics", lambda: job_metric(job, "redis_outage_ms") >= (outage_s - 5) * 1000, 30, 1)
            assert job_metric(job, "redis_failures") == 0
        else:  # each failure is the writer (or catalog) giving up, and restarted the job from its checkpoint
            assert failed and all("RedisUnavailableError" in f for f in failed), [f[:300] for f in failed]
        n_restarts = len(failed)
        # Counters of the current task attempts (a restart resets them): reported for the ride-through only.
        metrics = {m: job_metric(job, m) for m in ("redis_retries", "redis_outage_ms")} if not failed else {}
        reliability_report(
            f"redis down {outage_s} s ({name}, redis_retry_timeout_s {retry_timeout_s:g})",
            sent=len(sent),
            applied=sum(counts(r, users).values()),
            dead_lettered=0,
            redis_down_s=round(back_at - down_at, 1),
            recovery_first_write_s=round(first_fresh - back_at, 1),
            recovery_drained_s=round(drained - back_at, 1),
            job_restarts=n_restarts,
            **metrics,
        )
    finally:
        launcher.stop(settings, say=lambda *_: None)
        RedisServer.stop(pid)

