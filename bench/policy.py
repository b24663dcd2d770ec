"""What the policy stage costs: the job with rules, diversity, explanations and an A/B experiment, against off.

    .venv/bin/python -m bench.policy [--events 50000] [--repeats 2] [--json]

It starts a private Kafka + Redis (``<run_dir>/bench-policy``), publishes the ML-100k catalog (every item with
``attributes.available``, a few false), trains and promotes a 1-epoch model and publishes a second version for the
experiment's arm, and loads ``--events`` MovieLens-100k events. Then, alternating ``--repeats`` times, it runs
:func:`bench.stream.run_variant` (thread mode, scoring; the clock from the first user written to Redis to the
last event applied) with the policy **off** (``explain: false``, no repeat rule: the writer's plain top-k) and
**on** (:data:`POLICY_ON`: an ``exclude``, a boost, a category cap, a freshness boost, diversity, explanations,
the repeat rule, and a two-arm experiment whose second arm is another model version and rule set). Each run
starts the job from the beginning of the same topic, so both see the same events in the same order.

The writer scores within a budget (``job.score_share``), so the policy's cost shows less in events/s than in the
scorer's users per second. The stage alone is therefore also timed: per chunk of 256 users, the scorer's top-k
(off) against the scorer's candidates plus :meth:`serving.policy.Policy.rank_many` over the chunk (on), as the
writer calls them.

Prints a table; writes ``bench/results/policy.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from typing import Any

from bench.results import run_benchmark
from bench.stream import quiet, run_variant
from infra import stack
from serving.policy import Policy, UserContext, item_facts
from streamrec.config import PolicyConfig, load_config

UNAVAILABLE_EVERY = 50  # every 50th catalog item is unavailable
POLICY_OFF: dict[str, Any] = {"default": {"explain": False, "repeat_impressions": None}}
_ON_RULES: dict[str, Any] = {
    "exclude": [{"attribute": "available", "equals": False}],
    "boosts": [{"name": "drama-week", "when": {"category": "Drama"}, "by": 0.05}],
    "max_per_category": 4,
    "fresh_boost": 0.1,
    "diversity": 0.3,
    "explain": True,
    "repeat_impressions": 5,
}
POLICY_ON: dict[str, Any] = {
    "default": _ON_RULES,
    "rule_sets": {"plain-diverse": {**_ON_RULES, "max_per_category": None, "diversity": 0.5}},
    # The second arm's model_version is filled in with the second artifact's version.
    "experiments": [{"name": "bench", "arms": {"a": {}, "b": {"rules": "plain-diverse", "model_version": None}}}],
}
CHUNK = 256


def stage_cost(scorer: Any, events: list[dict[str, Any]], catalog: list[dict[str, Any]], k: int,  # noqa: ANN401
               repeats: int = 5) -> dict[str, Any]:
    """Users per second through the scorer alone (top-k) and through the scorer plus the policy stage."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(e)
    users = list(by_user)[:CHUNK]
    hist = [[e["item_id"] for e in by_user[u]][-50:] for u in users]
    times = [[e["ts"] for e in by_user[u]][-50:] for u in users]
    seen = [{e["item_id"] for e in by_user[u]} for u in users]
    facts = {i["item_id"]: item_facts(i) for i in catalog}
    policy = Policy(PolicyConfig.model_validate(POLICY_ON | {"experiments": []}))
    rules = policy.rules("default")
    ctx = [UserContext(u, "default", h, t[-1], {}, s) for u, h, t, s in zip(users, hist, times, seen, strict=True)]

    def off() -> None:
        scorer.score(hist, k, exclude=seen, times=times)

    def on() -> None:  # as the writer runs it: the chunk's candidates, then the stage for the whole chunk
        cands = scorer.score(hist, Policy.pool(k, rules), exclude=seen, times=times)
        policy.rank_many(ctx, cands, k, [rules] * len(ctx), facts.get, scorer.item_vectors, scorer.knows)

    out: dict[str, Any] = {"users_per_call": len(users)}
    for name, fn in (("off", off), ("on", on)):
        fn()  # warm up
        took = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            took.append(time.perf_counter() - t0)
        out[f"{name}_users_per_s"] = round(len(users) / statistics.median(took))
    out["on_over_off"] = round(out["on_users_per_s"] / out["off_users_per_s"], 3)
    out["policy_us_per_user"] = round((1 / out["on_users_per_s"] - 1 / out["off_users_per_s"]) * 1e6, 1)
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark with parsed options; prints its table and returns the result."""
    from jobs.producer import EventProducer
    from model_export.artifact.registry import Registry
    from model_export.data.datasets import load_dataset
    from model_export.pipeline import train_and_export_events
    from model_export.train import TrainConfig
    from serving.scorer import Scorer

    started = time.monotonic()
    base = load_config()
    run_dir = base.run_dir / "bench-policy"
    s = stack.isolated_settings(base, run_dir)
    s = s.model_copy(update={"flink": s.flink.model_copy(update={"checkpoint_interval_ms": 5000})})
    rows: list[dict[str, Any]] = []
    try:
        stack.up(s, say=quiet)
        data = load_dataset("ml-100k")
        events = data.events[: args.events]
        catalog = [{**item, "attributes": {**(item.get("attributes") or {}), "available": n % UNAVAILABLE_EVERY != 0}}
                   for n, item in enumerate(data.items)]
        with EventProducer(s.kafka.bootstrap, s.kafka.events_topic, s.kafka.items_topic) as prod:
            for item in catalog:
                prod.send_item(item)
            for e in events:
                prod.send(e)
        want = Counter(e["user_id"] for e in events)
        reg = Registry(run_dir / "models")
        served = reg.promote(reg.publish(train_and_export_events(
            events, run_dir / "artifacts", name="bench", config=TrainConfig(epochs=1))))
        other = reg.publish(train_and_export_events(
            events, run_dir / "artifacts", name="bench-b", config=TrainConfig(epochs=1), seed=1))
        on = {**POLICY_ON, "experiments": [{"name": "bench", "arms": {
            "a": {}, "b": {"rules": "plain-diverse", "model_version": other}}}]}
        policies = {"off": PolicyConfig.model_validate(POLICY_OFF), "on": PolicyConfig.model_validate(on)}
        ids = [i["item_id"] for i in catalog]
        for n in range(args.repeats):
            for name, policy in policies.items():
                variant = f"policy-{name}-{n}"
                row = run_variant(s.model_copy(update={"policy": policy}), variant, "thread", True, want, run_dir, ids)
                rows.append({**row, "policy": name, "repeat": n})
                print(f"{variant:18} {row['events_per_s']:>8} events/s, job {row['job_cpu_us_per_event']} us/event, "
                      f"every list {row['recs_complete_after_s']} s after the last event", flush=True)
        scorer = Scorer(reg.path(served), intra_op_threads=1)
        scorer.restrict_to(ids)
        stage = stage_cost(scorer, events, catalog, s.job.top_k)
    finally:
        stack.down(s, say=quiet)

    def mean(policy: str, field: str) -> float:
        return statistics.mean(r[field] for r in rows if r["policy"] == policy)

    pairs = [(a["events_per_s"], b["events_per_s"]) for a, b in zip(rows[1::2], rows[0::2], strict=True)]
    result: dict[str, Any] = {
        "events": args.events,
        "repeats": args.repeats,
        "policy_on": on,
        "policy_off": POLICY_OFF,
        "runs": rows,
        "summary": {
            "off_events_per_s": round(mean("off", "events_per_s")),
            "on_events_per_s": round(mean("on", "events_per_s")),
            # each on-run against the off-run just before it: the machine's drift cancels pair by pair
            "on_over_off_events_per_s": round(statistics.mean(on_ / off for on_, off in pairs), 3),
            "off_job_cpu_us_per_event": round(mean("off", "job_cpu_us_per_event"), 1),
            "on_job_cpu_us_per_event": round(mean("on", "job_cpu_us_per_event"), 1),
        },
        "stage": stage,
        "wall_s": round(time.monotonic() - started),
    }
    print_table(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    """The runs and the on/off ratios."""
    print(f"\n{'run':18} {'events/s':>9} {'job us/event':>13} {'lists done s':>13}")
    for r in result["runs"]:
        print(f"{r['variant']:18} {r['events_per_s']:>9} {r['job_cpu_us_per_event']:>13} "
              f"{r['recs_complete_after_s']:>13}")
    sm, st = result["summary"], result["stage"]
    print(f"\nstream: on / off = {sm['on_over_off_events_per_s']} (events/s, paired runs); job CPU per event "
          f"{sm['on_job_cpu_us_per_event']} vs {sm['off_job_cpu_us_per_event']} us")
    print(f"scorer path: {st['on_users_per_s']} users/s with the policy vs {st['off_users_per_s']} without "
          f"(on / off = {st['on_over_off']}; the stage costs {st['policy_us_per_user']} us per user)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000, help="MovieLens-100k events each run applies")
    p.add_argument("--repeats", type=int, default=2, help="off/on pairs")
    return run_benchmark("policy", p, measure, argv)


if __name__ == "__main__":
    main()
