"""End to end: a model promoted while events flow is picked up by the running job, without a restart.

Every event is applied to the user state exactly once across the swap, recommendations switch to the new
version, a corrupt version is refused while the old one keeps serving, and the online hit rate is kept per
version.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from jobs import launcher
from jobs.producer import EventProducer
from model_export.artifact.contract import CONTRACT_FILE
from model_export.artifact.registry import STATE_FILE, Registry
from model_export.data.datasets import load_dataset
from model_export.pipeline import train_and_export_events
from model_export.train import TrainConfig
from serving.store import connect, decode_recommendations, key, read_online_metrics

pytestmark = pytest.mark.e2e

TRAIN_EVENTS = 2000
STREAM_EVENTS = 3000


def wait_for(what: str, check, timeout_s: float = 120.0, every_s: float = 0.1):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def versions_served(r, users) -> Counter:  # noqa: ANN001
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.get(key("rec", u))
    return Counter((decode_recommendations(raw) or {}).get("model_version") for raw in pipe.execute())


def test_promotion_while_events_flow_swaps_the_model_and_applies_each_event_once(make_settings, tmp_path):
    settings, config_path = make_settings(job={"model_check_interval_s": 0.5, "top_k": 10})
    data = load_dataset("ml-100k")
    # Both versions learn from the same past; the second one is trained longer (a different model).
    past, stream = data.events[:TRAIN_EVENTS], data.events[TRAIN_EVENTS : TRAIN_EVENTS + STREAM_EVENTS]
    registry = Registry(settings.path(settings.models.registry_dir))
    out = tmp_path / "artifacts"
    old = registry.publish(train_and_export_events(past, out, name="old", config=TrainConfig(epochs=1)))
    new = registry.publish(train_and_export_events(past, out, name="new", config=TrainConfig(epochs=3), seed=1))
    registry.promote(old)
    r = connect(settings.redis.url)
    r.flushdb()
    sent: Counter[str] = Counter()
    launcher.start(settings, str(config_path), say=lambda *_: None)
    try:
        k = settings.kafka
        with EventProducer(k.bootstrap, k.events_topic) as producer:
            half = len(stream) // 2
            for e in stream[:half]:
                producer.send(e)
                sent[e["user_id"]] += 1
            producer.flush()
            wait_for("the old model's recommendations", lambda: versions_served(r, sent)[old] > 0)

            # Promote while the second half streams in at a steady rate. The job swaps between two batches, so
            # events must still be flowing when the new version has loaded: on a loaded machine loading can
            # outlast the second half, and then the stream goes on with repeat views until the swap is seen.
            swapped = threading.Event()
            streamed: list[dict] = []

            def produce_rest() -> None:
                for n, e in enumerate(stream[half:]):
                    producer.send(e)
                    streamed.append(e)
                    if n % 25 == 0:
                        time.sleep(0.05)
                users = list(sent)
                n = 0
                while not swapped.is_set():
                    u = users[n % len(users)]
                    e = {"user_id": u, "item_id": past[n % len(past)]["item_id"], "type": "view",
                         "ts": stream[-1]["ts"] - 1}
                    producer.send(e)
                    streamed.append(e)
                    n += 1
                    time.sleep(0.01)

            flowing = threading.Thread(target=produce_rest)
            flowing.start()
            time.sleep(0.3)
            promoted_at = time.monotonic()
            registry.promote(new)
            try:
                wait_for("a recommendation from the promoted model", lambda: versions_served(r, sent)[new] > 0,
                         60, 0.02)
                swap_s = time.monotonic() - promoted_at
            finally:
                swapped.set()
                flowing.join()
            producer.flush()
            for e in streamed:
                sent[e["user_id"]] += 1

            def all_applied() -> bool:
                pipe = r.pipeline(transaction=False)
                for u in sent:
                    pipe.hget(key("user", u), "events")
                return [int(x or 0) for x in pipe.execute()] == list(sent.values())

            wait_for("every event in the user state", all_applied, 180, 0.3)
            print(f"promotion -> first recommendation from {new}: {swap_s * 1000:.0f} ms")
            assert swap_s < 10

            # One more event per user: every user's list is now the new model's.
            last_ts = stream[-1]["ts"]
            for n, u in enumerate(sent):
                producer.send({"user_id": u, "item_id": past[n]["item_id"], "type": "view", "ts": last_ts + n + 1})
                sent[u] += 1
            producer.flush()
            wait_for("every event in the user state", all_applied, 120, 0.3)
            wait_for("every list from the new model", lambda: versions_served(r, sent) == Counter({new: len(sent)}))

            # A corrupt version (a tampered file, promoted behind the registry's back) is refused: the job
            # logs an error and keeps serving the version it has.
            bad = registry.publish(train_and_export_events(past, out, name="bad", config=TrainConfig(epochs=1)))
            item_file = json.loads((registry.path(bad) / CONTRACT_FILE).read_text())["item_embeddings_file"]
            (registry.path(bad) / item_file).write_bytes(b"tampered")
            state_file = registry.root / STATE_FILE
            state = json.loads(state_file.read_text())
            state["promoted"].append(bad)
            state_file.write_text(json.dumps(state))
            time.sleep(2 * settings.job.model_check_interval_s + 0.5)
            for n, u in enumerate(sent):
                producer.send({"user_id": u, "item_id": past[n + 1]["item_id"], "type": "view", "ts": last_ts + n})
                sent[u] += 1
            producer.flush()
            wait_for("every event in the user state", all_applied, 120, 0.3)
            time.sleep(0.5)
            assert versions_served(r, sent) == Counter({new: len(sent)})

        # The stream measured its hit rate for both versions, from the actions that followed their lists.
        online = read_online_metrics(r)
        assert {old, new} <= set(online)
        for version in (old, new):
            assert online[version]["all"]["actions"] > 0
            assert 0 <= online[version]["all"]["hit_rate@10"] <= 1
        assert launcher.status(settings)["running"]  # no restart happened, nothing crashed
    finally:
        launcher.stop(settings, say=lambda *_: None)
