"""``streamrec demo`` (what ``make demo`` runs): the whole path on the embedded default, from nothing.

It starts its own stack (Kafka, Redis) on free ports under ``<run_dir>/demo``, replays MovieLens through Kafka,
trains a model from the events read back from Kafka, promotes it, runs the interest job on the MiniCluster,
serves the HTTP API, and shows a few users' histories and live recommendations. Sizes for tests:
``STREAMREC_DEMO_LIMIT`` (events replayed) and ``STREAMREC_DEMO_EPOCHS`` (training epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from typing import Any

from infra.process import spawn, stop_pid, wait_for
from infra.stack import isolated_settings
from streamrec.config import CUTOFF, Settings, dump_config

SHOW_USERS = 3
SHOW_ITEMS = 5


def _step(n: int, text: str) -> None:
    print(f"\n== {n}/6 {text}", flush=True)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code."""
    from infra import stack
    from jobs import launcher
    from jobs.producer import EventProducer, replay
    from model_export.data.datasets import load_dataset
    from serving.store import connect, wait_for_events

    limit = args.limit or int(os.environ.get("STREAMREC_DEMO_LIMIT", "0")) or None
    epochs = int(os.environ.get("STREAMREC_DEMO_EPOCHS", "0")) or None
    s = isolated_settings(settings, settings.run_dir / "demo")
    config_path = dump_config(s, s.run_dir / "config.yaml")
    api_pid = None
    try:
        _step(1, "stack: Kafka (KRaft) and Redis on free ports")
        stack.up(s)
        r = connect(s.redis.url)

        _step(2, f"replay {args.dataset} through Kafka in event-time order")
        data = load_dataset(args.dataset)
        titles = {i["item_id"]: i["title"] for i in data.items}
        t0 = time.monotonic()
        with EventProducer(s.kafka.bootstrap, s.kafka.events_topic, s.kafka.items_topic) as p:
            for item in data.items:
                p.send_item(item)
            sent = replay(p, data.events, limit=limit, total=len(data.events), progress=sys.stderr.isatty())
        print(f"sent {len(data.items)} items and {sent} events in {time.monotonic() - t0:.1f}s")

        _step(3, "train from the event log read back from Kafka; export to ONNX; register; promote")
        log_events = _train_and_publish(s, args.dataset, epochs)

        _step(
            4,
            "interest job on the embedded MiniCluster: every event -> user state -> batched ONNX scoring -> Redis",
        )
        want = Counter(e["user_id"] for e in log_events)
        t0 = time.monotonic()
        launcher.start(s, str(config_path))
        users = list(want)
        took = wait_for_events(r, want)
        print(
            f"job applied {len(log_events)} events for {len(users)} users in {took:.1f}s "
            f"(~{len(log_events) / max(took, 1e-9):.0f} events/s including start-up, from {time.monotonic() - t0:.1f}s)"
        )

        _step(5, "front-end API: GET /v1/users/{id}/recommendations")
        api_pid = spawn(
            [sys.executable, "-m", "streamrec.cli", "--config", str(config_path), "serve"],
            s.run_dir / "api.log",
        )
        base = f"http://{s.api.host}:{s.api.port}"
        wait_for("the API", lambda: _healthy(base), 60)
        by_user: dict[str, list[str]] = defaultdict(list)
        for e in log_events:
            by_user[e["user_id"]].append(e["item_id"])
        shown = sorted(users, key=lambda u: -len(by_user[u]))[:SHOW_USERS]
        for u in shown:
            _show_user(base, u, by_user[u], titles)
        unknown = _get(f"{base}/v1/users/{urllib.parse.quote('someone-new', safe='')}/recommendations?k=3")
        print(f"unknown user -> source={unknown['source']}: {[i['title'] for i in unknown['items']]}")

        _step(6, "live: a new event changes the user's recommendations within seconds")
        _live_update(s, r, base, shown[0], want[shown[0]], by_user[shown[0]], titles, data.items[0]["item_id"])
        print(f"\ndemo done. Stack state in {s.run_dir}; API log {s.run_dir / 'api.log'}")
        return 0
    finally:
        stop_pid(api_pid)
        if getattr(args, "keep", False):
            print(f"stack left running: streamrec --config {config_path} down")
        else:
            stack.down(s, say=lambda *_: None)


def _train_and_publish(s: Settings, dataset: str, epochs: int | None) -> list[dict[str, Any]]:
    """Train on the event log and catalog read back from Kafka, publish it, print its offline metrics.

    Returns:
        The events read back (the model's training data).
    """
    from model_export.data.event_log import read_events, read_items
    from model_export.pipeline import train_and_export_events
    from model_export.train import TrainConfig
    from streamrec.publish import publish, registry

    log_events = read_events(s.kafka.bootstrap, s.kafka.events_topic)
    # The catalog read back too: item texts feed the model's text tower (and new items' rows).
    catalog = read_items(s.kafka.bootstrap, s.kafka.items_topic)
    cfg = TrainConfig(epochs=epochs) if epochs else TrainConfig()
    artifact = train_and_export_events(log_events, s.run_dir / "artifacts", name=dataset, config=cfg, catalog=catalog)
    version = publish(s, artifact, promote=True, events=log_events)
    metrics = json.loads((registry(s).path(version) / "contract.json").read_text())["metrics"]
    print(f"model {version} in service. Offline metrics (full ranking over all items, seen items excluded):")
    recall, ndcg = f"recall@{CUTOFF}", f"ndcg@{CUTOFF}"
    print(f"  {'protocol':10} {'model':12} {f'Recall@{CUTOFF}':>10} {f'NDCG@{CUTOFF}':>10} {'MRR':>8}")
    for protocol in ("time", "loo"):
        for name, m in metrics[protocol].items():
            if isinstance(m, dict) and recall in m:
                print(f"  {protocol:10} {name:12} {m[recall]:10.4f} {m[ndcg]:10.4f} {m['mrr']:8.4f}")
    return log_events


def _live_update(
    s: Settings,
    r: Any,
    base: str,
    user: str,
    applied: int,
    history: list[str],
    titles: dict[str, str],
    fallback_item: str,
) -> None:
    """Send the user one new rating (their top recommendation) and time it until Redis has applied it."""
    from jobs.producer import EventProducer
    from serving.store import decode_user, key, wait_for_events

    before = json.loads(r.get(key("rec", user)) or "{}").get("items", [])
    fresh = next(i["item_id"] for i in (before or [{"item_id": fallback_item}]))
    last_ts = decode_user(r.hgetall(key("user", user)))["last_ts"]  # type: ignore[index]
    sent_ms = int(time.time() * 1000)
    with EventProducer(s.kafka.bootstrap, s.kafka.events_topic) as p:
        p.send({"user_id": user, "item_id": fresh, "type": "rating", "value": 5.0, "ts": last_ts + 1000})
    took = wait_for_events(r, {user: applied + 1}, 60, 0.02)
    # rec:{id} follows user:{id}: the writer scores the users of a batch after writing their state.
    deadline = time.monotonic() + 60
    while json.loads(r.get(key("rec", user)) or "{}").get("computed_at", 0) < sent_ms and time.monotonic() < deadline:
        time.sleep(0.02)
    rec_ms = int(time.time() * 1000) - sent_ms
    print(f"user {user} rated {titles.get(fresh, fresh)!r}; Redis updated {took * 1000:.0f} ms after the send "
          f"(user:{user}), its recommendations by {rec_ms} ms")
    _show_user(base, user, [*history, fresh], titles)


def _healthy(base: str) -> bool:
    try:
        return _get(f"{base}/healthz").get("status") == "ok"
    except OSError:
        return False


def _show_user(base: str, user: str, history: list[str], titles: dict[str, str]) -> None:
    body = _get(f"{base}/v1/users/{urllib.parse.quote(user, safe='')}/recommendations?k={SHOW_ITEMS}")
    print(
        f"\nuser {user}: {len(history)} events; latest: " + "; ".join(titles.get(i, i) for i in history[-3:])
    )
    print(f"  recommended ({body['source']}, model {body['model_version']}):")
    for it in body["items"]:
        print(f"    {it['score']:8.3f}  {it['title']}")
    seen = set(history)
    assert not seen & {it["item_id"] for it in body["items"]}, "a seen item was recommended"


__all__ = ["run_demo"]
