"""End to end, cold start: an item the model never saw arrives on `items` and is recommended from its text alone.

The artifact is a text model trained on the first events of ML-100k; the new item has no event in them,
so it is not in the model's index. Offline, the same artifact (its exported text encoder and projection,
:meth:`serving.scorer.Scorer.add_items`) names a history for which the new item ranks in the top-k; in
the stream, once the item has passed the `items` topic, a fresh user with that history gets it in
`rec:{user}`: the job embedded it from its text, within seconds.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from jobs import launcher
from jobs.producer import EventProducer
from model_export.artifact.registry import Registry
from model_export.data.datasets import load_dataset
from model_export.pipeline import train_and_export_events
from model_export.train import TrainConfig
from serving.scorer import Scorer
from serving.store import connect, decode_recommendations, key
from streamrec.events import item_text

pytestmark = pytest.mark.e2e

EVENTS = 3000
TOP_K = 10
# From the item on `items` to its first recommendation: the catalog stage, the broadcast, one text
# encoding (the encoder loads on first use, ~1 s) and a flush.
WITHIN_S = 30.0


def test_a_new_item_is_recommended_from_its_text(make_settings, tmp_path):
    # The model's own order: no diversity re-ranking (the policy stage has its own e2e test).
    settings, config_path = make_settings(job={"top_k": TOP_K}, policy={"default": {"diversity": 0.0}})
    data = load_dataset("ml-100k")
    events = data.events[:EVENTS]
    catalog = {r["item_id"]: r for r in data.items}
    artifact = train_and_export_events(
        events, tmp_path / "artifacts", name="cold", config=TrainConfig(epochs=3), catalog=catalog
    )
    registry = Registry(settings.path(settings.models.registry_dir))
    version = registry.promote(registry.publish(artifact))

    # Offline: which brand-new item ranks in the top-k for which one-item history, through the artifact.
    scorer = Scorer(registry.path(version), prefer_gpu=False)
    assert scorer.embeds_text
    new_items = [i for i in catalog if not scorer.knows(i)]
    assert scorer.add_items({i: item_text(catalog[i]) for i in new_items}) == len(new_items)
    known = [i for i in scorer.item_ids if i not in set(new_items)]
    t0 = events[-1]["ts"] + 1000
    recs = scorer.score([[i] for i in known], TOP_K, times=[[t0]] * len(known), scenarios=[["web"]] * len(known))
    new_set = set(new_items)
    hits = [
        (h, rank, item) for h, r in zip(known, recs, strict=True) for rank, (item, _) in enumerate(r) if item in new_set
    ]
    assert hits, "no new item reaches a top-k offline: the text path carries no signal"
    history_item, _, new_item = min(hits, key=lambda h: h[1])

    r = connect(settings.redis.url)
    r.flushdb()
    launcher.start(settings, str(config_path), say=lambda *_: None)
    try:
        k = settings.kafka
        with EventProducer(k.bootstrap, k.events_topic, k.items_topic) as p:
            others = [record for item_id, record in catalog.items() if item_id != new_item]
            for record in others:
                p.send_item(record)
            p.flush()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not r.exists(key("item", others[-1]["item_id"])):
                time.sleep(0.2)
            # A first user makes the writer embed the other unknown catalog items in bulk, before the clock starts.
            p.send({"user_id": "warm-up", "item_id": history_item, "type": "view", "ts": t0, "scenario": "web"})
            p.flush()
            while time.monotonic() < deadline and not r.exists(key("rec", "warm-up")):
                time.sleep(0.2)
            assert r.exists(key("rec", "warm-up"))
            # The new item is announced; as soon as the catalog stage has it, a fresh user acts.
            sent = time.monotonic()
            p.send_item(catalog[new_item])
            p.flush()
            while time.monotonic() < sent + WITHIN_S and not r.exists(key("item", new_item)):
                time.sleep(0.05)
            p.send({"user_id": "fresh", "item_id": history_item, "type": "view", "ts": t0, "scenario": "web"})
            p.flush()
        got: list[str] = []
        while time.monotonic() < sent + WITHIN_S:
            rec = decode_recommendations(r.get(key("rec", "fresh")))
            got = [i["item_id"] for i in rec["items"]] if rec else []
            if new_item in got:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - sent
        print(f"\ncold item {new_item!r} recommended {elapsed:.2f}s after it was sent to `items`")
        assert new_item in got, f"{new_item} not in rec:fresh {got} after {elapsed:.1f}s"
        # What the stream recommends is what the artifact computes offline for the same history.
        want = Scorer(registry.path(version), prefer_gpu=False)
        want.add_items({i: item_text(catalog[i]) for i in new_items})
        want.restrict_to(catalog)
        (expected,) = want.score([[history_item]], TOP_K, times=[[t0]], scenarios=[["web"]])
        assert got == [i for i, _ in expected]
        assert np.isfinite([s for _, s in expected]).all()
    finally:
        launcher.stop(settings, say=lambda *_: None)
