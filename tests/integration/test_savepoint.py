"""Upgrade through a savepoint: `job stop --savepoint`, then the next version `job start --from-savepoint PATH`.

Version 1 (parallelism 1, ``job.recent_items: 50``) applies part of the stream and is stopped with a savepoint
through the CLI, on the MiniCluster and on a standalone cluster. Events sent while no job runs wait in Kafka.
Version 2 (parallelism 2, ``job.recent_items: 5``) starts from the savepoint: every user's ``events`` in Redis
equals the valid events sent (exactly once across the upgrade), and the new settings are live (each
``recent`` list is cut to 5, and the job's operators run at parallelism 2).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from infra.stack import read_state
from jobs import launcher
from jobs.producer import EventProducer
from serving.store import connect, decode_user, key
from streamrec.cli import main as cli

pytestmark = pytest.mark.integration

USERS = 8
NEW_RECENT = 5


def events(start: int, n: int) -> list[dict]:
    return [
        {"user_id": f"s{i % USERS}", "item_id": f"m{i % 41}", "type": "view", "ts": 1_700_000_000_000 + i * 10}
        for i in range(start, start + n)
    ]


def send(settings, batch: list[dict]) -> None:
    with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
        for e in batch:
            p.send(e)


def views(r, users) -> dict[str, dict]:
    return {u: decode_user(r.hgetall(key("user", u))) or {"events": 0, "recent": []} for u in users}


def wait_for(what: str, check, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def rest(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("mode", ["minicluster", "cluster"])
def test_stop_with_savepoint_and_upgrade(make_settings, tmp_path, capsys, mode, request, reliability_report):
    cluster = request.getfixturevalue("flink_cluster").rest_url if mode == "cluster" else None
    settings, config = make_settings(flink={"checkpoint_interval_ms": 1000})
    r = connect(settings.redis.url)
    r.flushdb()
    first, waiting, last = events(0, 240), events(240, 80), events(320, 80)
    users = sorted({e["user_id"] for e in first})
    want_first = Counter(e["user_id"] for e in first)
    want = Counter(e["user_id"] for e in first + waiting + last)
    # Version 2 of the job: same topics, group, run dir and Redis; new settings.
    v2 = yaml.safe_load(config.read_text())
    v2["flink"].update(parallelism=2)
    v2["job"].update(recent_items=NEW_RECENT)
    config2 = tmp_path / "config-v2.yaml"
    config2.write_text(yaml.safe_dump(v2))

    start_args = ["job", "start", *(["--cluster", cluster] if cluster else [])]
    assert cli(["--config", str(config), *start_args]) == 0
    try:
        send(settings, first)
        wait_for("version 1 to apply the first part", lambda: {u: v["events"] for u, v in views(r, users).items()}
                 == dict(want_first))
        assert all(len(v["recent"]) > NEW_RECENT for v in views(r, users).values())
        capsys.readouterr()
        t0 = time.monotonic()
        assert cli(["--config", str(config), "job", "stop", "--savepoint"]) == 0
        stop_s = time.monotonic() - t0
        out = capsys.readouterr().out
        savepoint = launcher.status(settings)["savepoint"]
        assert savepoint and savepoint in out, out
        assert (Path(savepoint) / "_metadata").is_file()
        assert Path(savepoint).parent == launcher.savepoint_dir(settings)
        assert not launcher.status(settings)["running"]

        send(settings, waiting)  # no job runs: these wait in Kafka
        time.sleep(1)
        assert {u: v["events"] for u, v in views(r, users).items()} == dict(want_first)

        t0 = time.monotonic()
        assert cli(["--config", str(config2), *start_args, "--from-savepoint", savepoint]) == 0
        job = launcher.status(settings)
        assert job["running"]
        send(settings, last)
        wait_for("version 2 to apply the rest", lambda: {u: v["events"] for u, v in views(r, users).items()}
                 == dict(want))
        upgrade_s = time.monotonic() - t0
        time.sleep(2)  # and no late double count
        final = views(r, users)
        assert {u: v["events"] for u, v in final.items()} == dict(want)
        # The new settings are live: recent lists cut to 5, operators at parallelism 2.
        assert all(len(v["recent"]) == NEW_RECENT for v in final.values())
        vertices = rest(f"{job['rest_url']}/jobs/{job['job_id']}")["vertices"]
        assert {v["name"]: v["parallelism"] for v in vertices if "user interest" in v["name"]}
        assert all(v["parallelism"] == 2 for v in vertices if "user interest" in v["name"])
        assert read_state(settings)["job"]["restored_from"] == savepoint
        reliability_report(
            f"savepoint upgrade ({mode}: parallelism 1 -> 2, recent_items 50 -> 5)",
            sent=sum(want.values()),
            applied=sum(v["events"] for v in final.values()),
            dead_lettered=0,
            stop_with_savepoint_s=round(stop_s, 1),
            new_version_started_and_backlog_applied_s=round(upgrade_s, 1),
        )
    finally:
        launcher.stop(settings, say=lambda *_: None)
