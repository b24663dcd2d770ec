"""Saturation throughput of the interest job: PyFlink execution modes, with and without scoring.

    .venv/bin/streamrec bench stream [--json]        # or: .venv/bin/python bench/stream.py [--events N]

It starts a private Kafka + Redis, loads N MovieLens-100k events into the ``events`` topic, then for each
variant starts the job on the MiniCluster from the beginning of the topic and times how long until every
user's ``user:{id}.events`` in Redis equals the number of events sent (Kafka -> Flink -> Redis, start-up
excluded: the clock starts at the first Redis write). Prints a table; writes ``bench/results/stream.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from infra import stack
from jobs import launcher
from jobs.producer import EventProducer
from model_export.datasets import load_dataset
from model_export.registry import Registry
from model_export.train import TrainConfig, train_and_export_events
from serving.store import connect, key
from streamrec.config import PROJECT_ROOT, Settings, dump_config, load_config

RESULTS = PROJECT_ROOT / "bench" / "results"


def run_variant(s: Settings, name: str, mode: str, scoring: bool, want: Counter[str], run_dir: Path) -> dict[str, Any]:
    """One job run over the whole topic; returns its events/s."""
    v = s.model_copy(
        update={
            "flink": s.flink.model_copy(update={"python_execution_mode": mode}),
            "kafka": s.kafka.model_copy(update={"consumer_group": f"bench-{name}"}),
            "models": s.models.model_copy(update={"registry_dir": str(run_dir / ("models" if scoring else "none"))}),
        }
    )
    r = connect(v.redis.url)
    r.flushdb()
    config = dump_config(v, run_dir / f"{name}.yaml")
    users = list(want)
    total = sum(want.values())
    launcher.start(v, str(config), say=lambda *_: None, timeout=300, resume=False)
    try:
        first = None
        while True:
            pipe = r.pipeline(transaction=False)
            for u in users:
                pipe.hget(key("user", u), "events")
            done = sum(min(int(x or 0), want[u]) for u, x in zip(users, pipe.execute(), strict=True))
            now = time.monotonic()
            if done and first is None:
                first, first_done = now, done
            if done == total:
                break
            time.sleep(0.05)
        seconds = max(now - first, 1e-9)  # type: ignore[operator]
        recs = sum(1 for u in users if r.exists(key("rec", u)))
        return {"variant": name, "mode": mode, "scoring": scoring, "events": total - first_done,
                "seconds": round(seconds, 2), "events_per_s": round((total - first_done) / seconds),
                "users_with_recs": recs}
    finally:
        launcher.stop(v, say=lambda *_: None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--modes", default="thread,process")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    base = load_config()
    run_dir = base.run_dir / "bench-stream"
    s = stack.isolated_settings(base, run_dir)
    s = s.model_copy(update={"flink": s.flink.model_copy(update={"checkpoint_interval_ms": 5000})})
    rows = []
    try:
        stack.up(s, say=lambda *_: None)
        events = load_dataset("ml-100k").events[: args.events]
        with EventProducer(s.kafka.bootstrap, s.kafka.events_topic) as prod:
            for e in events:
                prod.send(e)
        want = Counter(e["user_id"] for e in events)
        artifact = train_and_export_events(events, run_dir / "artifacts", name="bench", config=TrainConfig(epochs=1))
        reg = Registry(run_dir / "models")
        reg.promote(reg.publish(artifact))
        for mode in args.modes.split(","):
            for scoring in (False, True):
                name = f"{mode}-{'scoring' if scoring else 'state-only'}"
                rows.append(run_variant(s, name, mode, scoring, want, run_dir))
                print(f"{name:24} {rows[-1]['events_per_s']:>8} events/s", flush=True)
    finally:
        stack.down(s, say=lambda *_: None)
    by = {r["variant"]: r["events_per_s"] for r in rows}
    result = {"events": args.events, "runs": rows,
              "saturation": {"with_scoring": by.get("thread-scoring"), "without_scoring": by.get("thread-state-only")}}
    print(f"\n{'variant':24} {'events':>8} {'seconds':>8} {'events/s':>9} {'users w/ recs':>14}")
    for r in rows:
        print(f"{r['variant']:24} {r['events']:>8} {r['seconds']:>8} {r['events_per_s']:>9} {r['users_with_recs']:>14}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
