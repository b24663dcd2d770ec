"""Session fixtures: a real Kafka broker, Redis and (for cluster tests) a standalone Flink, on free ports."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from infra.flink_cluster import FlinkCluster
from infra.kafka_broker import KafkaBroker, ensure_topics
from infra.process import free_port
from infra.redis_server import RedisServer
from streamrec.config import PROJECT_ROOT, Settings, load_config

JARS = PROJECT_ROOT / ".cache" / "jars"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(
        home=tmp_path_factory.mktemp("kafka"), jars_dir=JARS, port=free_port(), controller_port=free_port()
    )
    pid = broker.start()
    yield broker
    KafkaBroker.stop(pid)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(home=tmp_path_factory.mktemp("redis"), port=free_port())
    pid = server.start()
    yield server
    RedisServer.stop(pid)


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkCluster]:
    cluster = FlinkCluster(home=tmp_path_factory.mktemp("flink"), rest_port=free_port(), rpc_port=free_port())
    pids = cluster.start()
    yield cluster
    FlinkCluster.stop(pids)


_run = itertools.count()


@pytest.fixture
def make_settings(
    kafka: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> Callable[..., tuple[Settings, Path]]:
    """Settings for one test: its own topics, consumer group, run dir and Redis db; returns (settings, yaml)."""

    def make(**sections: dict) -> tuple[Settings, Path]:
        n = next(_run)
        tag = f"{os.getpid()}-{n}"
        data: dict = {
            "kafka": {
                "bootstrap": kafka.bootstrap,
                "events_topic": f"events-{tag}",
                "dlq_topic": f"events.dlq-{tag}",
                "items_topic": f"items-{tag}",
                "recommendations_topic": f"recommendations-{tag}",
                "consumer_group": f"streamrec-{tag}",
            },
            # dbs 14 and 15 belong to tests/integration/test_api.py
            "redis": {"url": redis_server.url.rsplit("/", 1)[0] + f"/{n % 14}"},
            "flink": {"checkpoint_interval_ms": 1000},
            "job": {"flush_interval_ms": 50},
            "stack": {"run_dir": str(tmp_path / "run")},
            "models": {"registry_dir": str(tmp_path / "models")},
        }
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        path = tmp_path / f"config-{n}.yaml"
        path.write_text(yaml.safe_dump(data))
        settings = load_config(path, environ={})
        k = settings.kafka
        ensure_topics(
            k.bootstrap, [k.events_topic, k.dlq_topic, k.items_topic, k.recommendations_topic], k.partitions
        )
        return settings, path

    return make


# The reliability tests' figures (scenario, events sent / applied / dead-lettered, recovery time): printed at the
# end of the run and kept in .streamrec/reliability.json (git-ignored; $STREAMREC_RELIABILITY_JSON elsewhere, as
# `python -m bench.reliability` sets it), one row per scenario, the latest run's.
_DEFAULT_RELIABILITY_JSON = PROJECT_ROOT / ".streamrec" / "reliability.json"
RELIABILITY_JSON = Path(os.environ.get("STREAMREC_RELIABILITY_JSON") or _DEFAULT_RELIABILITY_JSON)
_reliability_rows: list[dict] = []


@pytest.fixture
def reliability_report() -> Callable[..., None]:
    def record(scenario: str, sent: int, applied: int, dead_lettered: int = 0, **figures: object) -> None:
        row = {"scenario": scenario, "sent": sent, "applied": applied, "dead_lettered": dead_lettered, **figures}
        _reliability_rows.append(row)
        print(f"\nreliability: {json.dumps(row)}")
        try:
            rows = {r["scenario"]: r for r in json.loads(RELIABILITY_JSON.read_text())}
        except (OSError, ValueError, TypeError, KeyError):
            rows = {}
        rows[scenario] = row
        RELIABILITY_JSON.parent.mkdir(parents=True, exist_ok=True)
        RELIABILITY_JSON.write_text(json.dumps(list(rows.values()), indent=1) + "\n")

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _reliability_rows:
        return
    terminalreporter.write_sep("-", f"reliability (also in {RELIABILITY_JSON})")
    for row in _reliability_rows:
        terminalreporter.write_line("  ".join(f"{k}={v}" for k, v in row.items()))
