"""End to end: producer -> Kafka -> Flink (parallelism 2) -> ONNX scorer -> Redis -> HTTP API."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict

import pytest

from infra.process import free_port, spawn, stop_pid
from jobs import launcher
from jobs.producer import EventProducer
from model_export.artifact.registry import Registry
from model_export.data.datasets import load_dataset
from model_export.pipeline import train_and_export_events
from model_export.train import TrainConfig
from serving.scorer import Scorer
from serving.store import connect, decode_user, key

pytestmark = pytest.mark.e2e

EVENTS = 3000
WITHHELD = 20


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_recommendations_are_the_models(make_settings, tmp_path):
    port = free_port()
    # The model's own order: no diversity re-ranking (the policy stage has its own e2e test).
    settings, config_path = make_settings(flink={"parallelism": 2}, api={"port": port}, job={"top_k": 10},
                                          policy={"default": {"diversity": 0.0}})
    data = load_dataset("ml-100k")
    events = data.events[:EVENTS]
    artifact = train_and_export_events(
        events, tmp_path / "artifacts", name="e2e", config=TrainConfig(epochs=2)
    )
    registry = Registry(settings.path(settings.models.registry_dir))
    version = registry.promote(registry.publish(artifact))
    r = connect(settings.redis.url)
    r.flushdb()

    launcher.start(settings, str(config_path), say=lambda *_: None)
    api = spawn(
        [sys.executable, "-m", "streamrec.cli", "--config", str(config_path), "serve"], tmp_path / "api.log"
    )
    try:
        # The catalog feed leaves out the most popular items: the job must not recommend what has no title.
        withheld = {i for i, _ in Counter(e["item_id"] for e in events).most_common(WITHHELD)}
        catalog = [item for item in data.items if item["item_id"] not in withheld]
        k = settings.kafka
        with EventProducer(k.bootstrap, k.events_topic, k.items_topic) as p:
            for item in catalog:
                p.send_item(item)
            p.flush()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not r.exists(key("item", catalog[-1]["item_id"])):
                time.sleep(0.2)
            for e in events:
                p.send(e)
        history: dict[str, list[str]] = defaultdict(list)
        times: dict[str, list[int]] = defaultdict(list)
        for e in events:
            history[e["user_id"]].append(e["item_id"])
            times[e["user_id"]].append(e["ts"])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            counts = [int(r.hget(key("user", u), "events") or 0) for u in history]
            if counts == [len(h) for h in history.values()]:
                break
            time.sleep(0.5)
        assert counts == [len(h) for h in history.values()]
        # The catalog reached the interest state through the broadcast: interests per genre, not only scenario.
        interests = [decode_user(r.hgetall(key("user", u)))["interests"] for u in history]
        # (ratings around the midpoint cancel out; a user whose events beat the catalog broadcast has no genre)
        assert sum("scenario:web" in i for i in interests) >= 0.9 * len(interests)
        assert sum(any(f.startswith("category:") for f in i) for i in interests) >= 0.9 * len(interests)
        time.sleep(
            0.5
        )  # the writer flushes the last batch after updating the user view in the same round trip

        scorer = Scorer(registry.path(version))
        scorer.restrict_to(item["item_id"] for item in catalog)
        users = sorted(history)
        cfg = settings.job
        n = cfg.recent_items
        expected = scorer.score(
            [history[u][-n:] for u in users],
            cfg.top_k,
            exclude=[set(history[u]) for u in users],
            times=[times[u][-n:] for u in users],
            scenarios=[["web"] * len(history[u][-n:]) for u in users],
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if get(f"{base}/healthz")["status"] == "ok":
                    break
            except OSError:
                time.sleep(0.2)
        checked = 0
        for u, want in zip(users, expected, strict=True):
            body = get(f"{base}/v1/users/{urllib.parse.quote(u, safe='')}/recommendations?k={cfg.top_k}")
            if not want:
                assert body["source"] == "popular"
                continue
            assert body["source"] == "personal"
            assert body["model_version"] == version
            assert [i["item_id"] for i in body["items"]] == [i for i, _ in want], u
            assert [i["score"] for i in body["items"]] == pytest.approx([s for _, s in want], abs=1e-4)
            assert not set(history[u]) & {i["item_id"] for i in body["items"]}
            assert all(i["title"] for i in body["items"])
            assert not withheld & {i["item_id"] for i in body["items"]}
            checked += 1
        assert checked >= len(users) // 2
    finally:
        stop_pid(api)
        launcher.stop(settings, say=lambda *_: None)
