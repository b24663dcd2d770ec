"""End to end: the right to be forgotten, from `DELETE /v1/users/{id}` (and `streamrec users forget`) through Kafka
and the Flink job to Redis, the job's state, and the event log the trainer reads."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from urllib.parse import quote

import pytest

from infra.process import free_port, spawn, stop_pid
from jobs import launcher
from jobs.producer import EventProducer
from model_export.artifact.registry import Registry
from model_export.data.datasets import build_timelines, load_dataset
from model_export.data.event_log import read_events
from model_export.pipeline import train_and_export_events
from model_export.train import TrainConfig
from serving.store import connect, decode_user, key

pytestmark = pytest.mark.e2e

TOKEN = "forget-e2e-token-4c2d"
TRAIN_EVENTS = 1500


def http(method: str, url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(what: str, check, timeout_s: float = 120.0) -> float:  # noqa: ANN001
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def test_a_forgotten_user_leaves_redis_the_state_and_the_training_data(make_settings, tmp_path):
    port = free_port()
    # Parallelism 2: keyed state bugs hide at 1; the forget record follows the user's events on their partition.
    settings, config_path = make_settings(
        api={"port": port, "token": TOKEN}, job={"top_k": 10}, flink={"parallelism": 2}
    )
    k = settings.kafka
    train = load_dataset("ml-100k").events[:TRAIN_EVENTS]
    registry = Registry(settings.path(settings.models.registry_dir))
    registry.promote(
        registry.publish(train_and_export_events(train, tmp_path / "art", name="forget", config=TrainConfig(epochs=1)))
    )
    by_user: dict[str, list[dict]] = defaultdict(list)
    for e in train:
        by_user[e["user_id"]].append(e)
    # Two users with a few events each, of items the model knows (so that they get a rec: list).
    a, b = [u for u, es in by_user.items() if len(es) >= 5][:2]
    history = {u: by_user[u][:5] for u in (a, b)}
    r = connect(settings.redis.url)
    r.flushdb()

    def view(u: str) -> dict | None:
        return decode_user(r.hgetall(key("user", u)))

    launcher.start(settings, str(config_path), say=lambda *_: None)
    api = spawn([sys.executable, "-m", "streamrec.cli", "--config", str(config_path), "serve"], tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        with EventProducer(k.bootstrap, k.events_topic) as p:
            for u in (a, b):
                for e in history[u]:
                    p.send(e)
        for u in (a, b):
            wait_for(f"{u}'s keys", lambda u=u: (view(u) or {}).get("events") == 5 and r.exists(key("rec", u)))
        wait_for("the API", lambda: _up(base), 60)
        assert http("GET", f"{base}/v1/users/{quote(a)}")[0] == 200

        # Writes need the token; reads never do.
        assert http("DELETE", f"{base}/v1/users/{quote(a)}")[0] == 401
        assert http("DELETE", f"{base}/v1/users/{quote(a)}", "not-the-token")[0] == 401
        status, body = http("DELETE", f"{base}/v1/users/{quote(a)}", TOKEN)
        assert status == 202, body
        assert body["user_id"] == a and body["status"] == "scheduled"
        forget_ts = body["ts"]
        took = wait_for("rec: and user: to go", lambda: not r.exists(key("rec", a), key("user", a)), 30)
        print(f"\nforget: keys gone {took:.2f}s after the 202")
        status, body = http("GET", f"{base}/v1/users/{quote(a)}")
        assert status == 404, body
        assert http("GET", f"{base}/v1/users/{quote(a)}/recommendations")[1]["source"] == "popular"
        assert view(b)["events"] == 5 and r.exists(key("rec", b))  # the other user is untouched

        # The state is gone too: a later event of the user starts afresh.
        later = {"user_id": a, "item_id": history[a][0]["item_id"], "type": "click", "ts": forget_ts + 1000}
        with EventProducer(k.bootstrap, k.events_topic) as p:
            p.send(later)
        wait_for("the later event", lambda: view(a) is not None, 30)
        assert view(a)["events"] == 1 and view(a)["recent"] == [later["item_id"]]

        # The CLI does the same for the other user.
        cli = subprocess.run(
            [sys.executable, "-m", "streamrec.cli", "--config", str(config_path), "users", "forget", b, "--json"],
            capture_output=True, text=True, timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["status"] == "scheduled"
        wait_for("the CLI's forget", lambda: not r.exists(key("rec", b), key("user", b)), 30)

        # The trainer's event log no longer yields the users' earlier events, only what came after.
        events = read_events(k.bootstrap, k.events_topic)
        assert [e for e in events if e["user_id"] in (a, b)] == [later]
        assert build_timelines(events) == {a: [(later["ts"], later["item_id"])]}
    finally:
        stop_pid(api)
        launcher.stop(settings, say=lambda *_: None)


def _up(base: str) -> bool:
    try:
        return http("GET", f"{base}/healthz")[0] == 200
    except OSError:
        return False
