"""The catalog path at scale: upserts per second into Redis, and a job start with the whole catalog in state.

    .venv/bin/streamrec bench catalog [--json] [--items 1000000] [--sizes 100000]
    .venv/bin/python -m bench.catalog [--items N] [--sizes N,N] [--checkpoint-interval-ms 2000] [--json]

The path measured: ``items`` (Kafka) -> decode + validate (JVM) -> one batch per flush (JVM) -> ``CatalogWriter``
(Python: DEL + HSET ``item:{id}`` and SADD ``catalog``, one Redis pipeline per batch) -> broadcast to the Python
writer; on the JVM the valid items also go into the interest operator's broadcast state (item -> category
facets), which every checkpoint carries. Per catalog size N (``--items``, and each of ``--sizes``, smallest
first), on a private Kafka + Redis of its own (``<run_dir>/bench-catalog/n<N>``):

0. **Preload**: N synthetic items (ids ``c-<n>``, a title, 1-3 of 20 categories, a year, a ~12-word text; the
   same N always give the same records) are generated lazily and sent with kafka-python at full speed, keyed
   by item id, into the ``items`` topic; the topic's end offsets must then add up to N.
1. **Upserts/s**: the job starts (thread mode, registry dir empty: no model, no scorer; checkpoints every
   ``--checkpoint-interval-ms``) on the preloaded topic. ``SCARD catalog`` is polled every 50 ms; the clock runs
   from the first poll that sees an item to the first that sees all N, and the items already there at the
   first poll are not counted. Reported: items/s; CPU time per item of the job's JVM (``/proc`` ticks over
   that window; in thread mode the Python ``CatalogWriter`` runs inside it), also split per Flink task (thread
   names from ``jstack``), and of Redis; the job's start to its first item in Redis. Checked: ``DBSIZE`` is
   N + 1 and a sample of ``item:{id}`` titles are as sent. After the load: the job's RSS (process group), its
   JVM heap after a full GC (``jcmd``), Redis ``used_memory``.
2. **Start with the catalog in state**: it waits for the first checkpoint *triggered* after all N items were
   in Redis (the JobManager's log: id, bytes, duration), stops the job without a savepoint (``launcher.stop``:
   SIGTERM to its process group, as after a crash only the retained checkpoint is left), measures the newest
   retained checkpoint's folder on disk (``chk-N``: what the restart reads), then ``launcher.start(resume=True)``.
   Right after ``start()`` returns (the job submitted) it sends one event ``{"user_id": "probe", "item_id":
   "c-0", "type": "view"}`` and times, from the ``start()`` call: the submission; ``user:probe`` with
   ``events`` = 1 in Redis (the first event applied); per task (chain of operators) its switch to INITIALIZING
   (state restore and ``open`` begin) and to RUNNING, from the TaskManager's lines in the MiniCluster's log
   (the REST API's view lags by up to its 3 s refresh). The job is RUNNING when its last task is; tasks off
   the probe's path (the catalog writer, the sinks) may still be initializing when the probe is applied.
   ``facets_restored``: the probe's interests carry c-0's categories, so the item facets came back from the
   checkpoint (not from Kafka: the restored ``items`` offsets are at the end of the topic).

Prints a table; writes ``bench/results/catalog.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.results import run_benchmark
from bench.scale import checkpoint_after, group_rss, heap_after_gc
from bench.stream import PRODUCER_CONFIG, job_jvm, process_ticks, quiet, task_cpu, thread_ticks, variant_settings
from infra import stack
from infra.process import pid_alive
from jobs import launcher
from serving.store import CATALOG, connect, key
from streamrec.config import Settings, dump_config, load_config
from streamrec.events import validate_event, validate_item

log = logging.getLogger("bench.catalog")  # also when run as __main__

CATEGORIES = (
    "Action", "Adventure", "Animation", "Books", "Comedy", "Crime", "Documentary", "Drama", "Electronics",
    "Fantasy", "Garden", "Horror", "Kitchen", "Music", "Mystery", "Romance", "Sci-Fi", "Sports", "Thriller", "Toys",
)
ADJECTIVES = ("Silent", "Golden", "Broken", "Hidden", "Last", "Electric", "Wild", "Quiet", "Red", "Northern",
              "Lost", "Bright", "Secret", "Iron", "Paper", "Velvet")
NOUNS = ("River", "Garden", "Machine", "Empire", "Signal", "Harbor", "Forest", "Mirror", "Engine", "Letter",
         "Island", "Winter", "Circuit", "Kingdom", "Lantern", "Bridge")
WORDS = ("a", "story", "of", "the", "city", "where", "light", "meets", "sound", "and", "every", "choice",
         "changes", "what", "comes", "next", "built", "for", "daily", "use", "with", "care", "durable", "classic")
ITEM_TS = 1_700_000_000_000
POLL_S = 0.05
PROBE_USER = "probe"
PROBE_ITEM = "c-0"
TITLE_SAMPLE = 200
# A TaskManager log line of a task's state switch, e.g. "2026-01-02 03:04:05,678 INFO  ...taskmanager.Task  [] -
# user interest (1/1)#0 (<attempt id>) switched from INITIALIZING to RUNNING."
TASK_SWITCH = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO\s+org\.apache\.flink\.runtime\.taskmanager\.Task\s.*? - "
    r"(.+?) \(\d+/\d+\)#\d+ \(\S+\) switched from \w+ to (\w+)\.$",
    re.M,
)


# --------------------------------------------------------------------------------------------- the catalog


def item_record(n: int) -> dict[str, Any]:
    """Synthetic item ``c-<n>``: the same record for the same n (a multiplicative hash, no RNG state)."""
    h = (n * 2654435761 + 0x9E3779B9) % 2**32
    cats = sorted({CATEGORIES[(h >> (3 + 5 * j)) % len(CATEGORIES)] for j in range(1 + h % 3)})
    text = " ".join(WORDS[(h >> s) % len(WORDS)] for s in range(0, 24, 2))
    return {
        "item_id": f"c-{n}",
        "title": f"{ADJECTIVES[(h >> 4) % len(ADJECTIVES)]} {NOUNS[(h >> 9) % len(NOUNS)]} {n}",
        "text": f"{text[0].upper()}{text[1:]}.",
        "categories": cats,
        "attributes": {"year": 1950 + h % 75},
        "ts": ITEM_TS,
    }


def item_records(n: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of items c-0 .. c-<n-1>, generated one at a time (never a list of N)."""
    for i in range(n):
        rec = item_record(i)
        yield rec["item_id"].encode(), json.dumps(rec, separators=(",", ":")).encode()


def produce_items(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    """Send N items at full speed (kafka-python, keyed by id, flushed once at the end); check the topic holds N."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    for i in range(min(n, 100)):  # the generator honours the items contract
        validate_item(item_record(i))
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_CONFIG)
    producer.partitions_for(topic)  # metadata before the clock starts
    sent_bytes = 0
    t0 = time.monotonic()
    send = producer.send
    for k, v in item_records(n):
        send(topic, key=k, value=v)
        sent_bytes += len(v)
    producer.flush()
    seconds = time.monotonic() - t0
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    in_topic = sum(consumer.end_offsets(parts).values())
    consumer.close()
    if in_topic != n:
        msg = f"the {topic} topic holds {in_topic} records, {n} were sent"
        raise RuntimeError(msg)
    return {"seconds": round(seconds, 2), "items_per_s": round(n / max(seconds, 1e-9)),
            "mean_record_bytes": round(sent_bytes / max(n, 1), 1)}


# --------------------------------------------------------------------------------------------- helpers


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def task_transitions(log_dir: Path, since: float) -> dict[str, dict[str, float]]:
    """From the MiniCluster's log: task (chain) name -> {state: epoch s} of its switches since ``since``.

    The TaskManager's own lines (``...taskmanager.Task``: when the task thread switched), the latest subtask's.
    """
    out: dict[str, dict[str, float]] = {}
    for f in log_dir.glob("*.log"):
        for m in TASK_SWITCH.finditer(f.read_text(errors="replace")):
            at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            if at >= since:
                states = out.setdefault(m.group(3), {})
                states[m.group(4)] = max(states.get(m.group(4), 0.0), at)
    return out


def wait_job_alive(pid: int, what: str) -> None:
    """Raise if the job's process exited (its log names why)."""
    if not pid_alive(pid):
        msg = f"the job process exited while {what}; see its log"
        raise RuntimeError(msg)


# --------------------------------------------------------------------------------------------- the phases


def load_catalog(v: Settings, config: Path, n: int, timeout: float) -> dict[str, Any]:
    """Phase 1: start the job on the preloaded topic, time the upserts until ``SCARD catalog`` = N.

    Leaves the job running (phase 2 needs its checkpoint); returns the row and ``done_ms`` (epoch ms when all
    N were seen) and the job's pid.
    """
    r = connect(v.redis.url)
    redis_pid = stack.read_state(v)["redis"]["pid"]
    hz = os.sysconf("SC_CLK_TCK")
    t_call = time.monotonic()
    job = launcher.start(v, str(config), say=quiet, timeout=300, resume=False)
    submitted = time.monotonic() - t_call
    jvm = job_jvm(job["pid"])
    first: tuple[float, int, int, int] | None = None  # (when, items, JVM ticks, Redis ticks) at the first poll
    threads0: dict[int, tuple[str, int]] = {}  # the JVM's threads' ticks at the first poll
    deadline = time.monotonic() + timeout
    polls = 0
    while True:
        count = int(r.scard(CATALOG))
        now = time.monotonic()
        if count and first is None:
            first = now, count, process_ticks(jvm), process_ticks(redis_pid)
            threads0 = thread_ticks(jvm) if jvm else {}
            log.info("n=%d: first item in Redis %.1fs after the start (%d there)", n, now - t_call, count)
        if count >= n:
            break
        if now > deadline:
            msg = f"after {timeout:.0f}s, {count} of {n} items are in the catalog set"
            raise TimeoutError(msg)
        polls += 1
        if polls % 200 == 0:
            wait_job_alive(job["pid"], "loading the catalog")
            log.info("n=%d: %d items in Redis", n, count)
        time.sleep(POLL_S)
    jvm_ticks, redis_ticks = process_ticks(jvm), process_ticks(redis_pid)
    done_ms = int(time.time() * 1000)
    assert first is not None
    t_first, n_first, jvm0, redis0 = first
    seconds = max(now - t_first, 1e-9)
    counted = max(n - n_first, 1)
    tasks = task_cpu(jvm, threads0, seconds) if jvm else {}  # % of a core per Flink task (thread), via jstack
    jvm_s, redis_s = (jvm_ticks - jvm0) / hz, (redis_ticks - redis0) / hz
    # Checks: one key per item plus the catalog set, and a sample of the hashes written as sent.
    keys = int(r.dbsize())
    step = max(1, n // TITLE_SAMPLE)
    sample = list(range(0, n, step))
    pipe = r.pipeline(transaction=False)
    for i in sample:
        pipe.hget(key("item", f"c-{i}"), "title")
    wrong = sum(1 for i, t in zip(sample, pipe.execute(), strict=True)
                if (t or b"").decode() != item_record(i)["title"])
    if keys != n + 1 or wrong:
        msg = f"Redis holds {keys} keys (want {n + 1}); {wrong} of {len(sample)} sampled titles differ"
        raise RuntimeError(msg)
    rss = group_rss(job["pid"])
    return {
        "items_counted": counted,
        "seconds": round(seconds, 2),
        "upserts_per_s": round(counted / seconds),
        "jvm_cpu_pct": round(jvm_s / seconds * 100, 1),
        "jvm_us_per_item": round(jvm_s * 1e6 / counted, 1),
        "redis_us_per_item": round(redis_s * 1e6 / counted, 1),
        "task_cpu_pct": tasks,
        "task_us_per_item": {k: round(v / 100 * seconds * 1e6 / counted, 1) for k, v in tasks.items()},
        "job_submitted_s": round(submitted, 2),
        "first_item_after_start_s": round(t_first - t_call, 2),
        "redis_keys": keys,
        "titles_checked": len(sample),
        "job_rss_bytes": sum(rss.values()),
        "job_rss_by_process": rss,
        "jvm_heap_after_gc_bytes": heap_after_gc(jvm) if jvm else None,
        "redis_used_memory_bytes": int(r.info("memory")["used_memory"]),
        "done_ms": done_ms,
        "pid": job["pid"],
    }


def restart_with_catalog(v: Settings, config: Path, timeout: float) -> dict[str, Any]:
    """Phase 2: start from the latest checkpoint, send the probe event, time until it is applied in Redis."""
    from kafka import KafkaProducer

    r = connect(v.redis.url)
    producer = KafkaProducer(bootstrap_servers=v.kafka.bootstrap, **PRODUCER_CONFIG)
    producer.partitions_for(v.kafka.events_topic)
    log_dir = v.run_dir / "flink-log"
    try:
        t0, epoch0 = time.monotonic(), time.time()
        job = launcher.start(v, str(config), say=quiet, timeout=timeout, resume=True)
        submitted = time.monotonic() - t0
        if not job.get("restored_from"):
            raise RuntimeError("the job started without a checkpoint to restore")
        now_ms = int(time.time() * 1000)
        probe = validate_event({"user_id": PROBE_USER, "item_id": PROBE_ITEM, "type": "view", "ts": now_ms})
        producer.send(v.kafka.events_topic, key=PROBE_USER.encode(), value=probe.to_json(), timestamp_ms=now_ms)
        producer.flush()
        deadline = t0 + timeout
        polls = 0
        while True:
            events = r.hget(key("user", PROBE_USER), "events")
            if events is not None and int(events) >= 1:
                break
            if time.monotonic() > deadline:
                msg = f"the probe event was not applied within {timeout:.0f}s of the restart"
                raise TimeoutError(msg)
            polls += 1
            if polls % 100 == 0:
                wait_job_alive(job["pid"], "restoring")
            time.sleep(POLL_S)
        first_event = time.monotonic() - t0
    finally:
        producer.close()
    # The tasks off the probe's path may still be initializing: their RUNNING line comes within 60 s.
    give_up = time.monotonic() + 60
    while True:
        switches = task_transitions(log_dir, epoch0 - 1)
        if (switches and all("RUNNING" in s for s in switches.values())) or time.monotonic() > give_up:
            break
        time.sleep(0.5)
    tasks = {
        name: {"initializing_s": round(s["INITIALIZING"] - epoch0, 2) if "INITIALIZING" in s else None,
               "running_s": round(s["RUNNING"] - epoch0, 2) if "RUNNING" in s else None}
        for name, s in sorted(switches.items(), key=lambda kv: kv[1].get("RUNNING", math.inf))
    }
    ran = [x["running_s"] for x in tasks.values()]
    interests = json.loads(r.hget(key("user", PROBE_USER), "interests") or b"{}")
    facets = [f"category:{c}" for c in item_record(0)["categories"]]
    return {
        "submitted_s": round(submitted, 2),
        "running_s": max(x for x in ran if x is not None) if ran and None not in ran else None,
        "first_event_s": round(first_event, 2),
        # Per task, seconds from the start() call to DEPLOYING -> INITIALIZING (restore + open) and to RUNNING.
        "tasks": tasks,
        "probe_events": int(r.hget(key("user", PROBE_USER), "events") or 0),
        "facets_restored": all(f in interests for f in facets),
        "catalog_after_restart": int(r.scard(CATALOG)),
        "restored_from": job["restored_from"],
    }


def run_size(base: Settings, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Both phases for a catalog of N items on a private stack of their own; the row of the table."""
    run_dir = base.run_dir / "bench-catalog" / f"n{n}"
    s = stack.isolated_settings(base, run_dir)
    flink = s.flink.model_copy(update={"checkpoint_interval_ms": args.checkpoint_interval_ms})
    s = s.model_copy(update={"flink": flink})
    v = variant_settings(s, "catalog", "thread", False, run_dir)
    Path(v.models.registry_dir).mkdir(parents=True, exist_ok=True)  # an empty registry: no model, no scorer
    config = dump_config(v, run_dir / "catalog.yaml")
    try:
        stack.up(v, say=quiet)
        log.info("n=%d: sending the items", n)
        produced = produce_items(v.kafka.bootstrap, v.kafka.items_topic, n)
        log.info("n=%d: %d items sent in %.1fs (%d/s)", n, n, produced["seconds"], produced["items_per_s"])
        try:
            load = load_catalog(v, config, n, args.timeout)
            log.info("n=%d: %d upserts/s, JVM %.1f us/item; waiting for a checkpoint", n, load["upserts_per_s"],
                     load["jvm_us_per_item"])
            chk = checkpoint_after(v, load.pop("done_ms"), timeout=args.timeout)
        finally:
            launcher.stop(v, say=quiet)  # a kill: no savepoint, the retained checkpoint is what is left
        latest = launcher.latest_checkpoint(v)
        if latest is None:
            raise RuntimeError("no retained checkpoint after the job was stopped")
        restored_bytes = dir_bytes(Path(latest))
        log.info("n=%d: checkpoint %d: %.1f MiB on disk; restarting from %s", n, chk["checkpoint"],
                 restored_bytes / 2**20, latest)
        try:
            restart = restart_with_catalog(v, config, args.timeout)
        finally:
            launcher.stop(v, say=quiet)
        if restart["restored_from"] != latest:
            log.warning("n=%d: restored from %s, not the checkpoint measured (%s)", n, restart["restored_from"], latest)
    finally:
        stack.down(v, say=quiet)
    load.pop("pid")
    return {
        "items": n,
        "produce": produced,
        "load": load,
        "checkpoint": {**chk, "restored_disk_bytes": restored_bytes},
        "restart": restart,
    }


# --------------------------------------------------------------------------------------------- main


def mib(b: float | None) -> str:
    return f"{b / 2**20:.1f}" if b is not None else "-"


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per catalog size."""
    print(f"\n{'items':>9} {'upserts/s':>10} {'JVM us/item':>12} {'Redis us/item':>14} {'chk MiB':>8} "
          f"{'chk ms':>7} {'submit s':>9} {'RUNNING s':>10} {'1st event s':>12} {'facets':>7}")
    for r in rows:
        ld, chk, rs = r["load"], r["checkpoint"], r["restart"]
        print(f"{r['items']:>9} {ld['upserts_per_s']:>10} {ld['jvm_us_per_item']:>12} {ld['redis_us_per_item']:>14} "
              f"{mib(chk['restored_disk_bytes']):>8} {chk['duration_ms']:>7} {rs['submitted_s']:>9} "
              f"{rs['running_s']!s:>10} {rs['first_event_s']:>12} {'yes' if rs['facets_restored'] else 'NO':>7}")
    print(f"\n{'items':>9} {'job RSS MiB':>12} {'heap MiB':>9} {'Redis MiB':>10} {'produce/s':>10} "
          f"{'1st item s':>11}")
    for r in rows:
        ld = r["load"]
        print(f"{r['items']:>9} {mib(ld['job_rss_bytes']):>12} {mib(ld['jvm_heap_after_gc_bytes']):>9} "
              f"{mib(ld['redis_used_memory_bytes']):>10} {r['produce']['items_per_s']:>10} "
              f"{ld['first_item_after_start_s']:>11}")


def print_tasks(rows: list[dict[str, Any]]) -> None:
    """Per size: where the JVM's CPU went during the load (per Flink task), and each task's restart timeline."""
    for r in rows:
        print(f"\nJVM CPU per item while loading {r['items']} items, per Flink task (us/item, % of a core):")
        for name, us in r["load"]["task_us_per_item"].items():
            print(f"  {us:>8} {r['load']['task_cpu_pct'][name]:>6}%  {name[:110]}")
        rs = r["restart"]
        print(f"restart with {r['items']} items in state: seconds from start() to each task's INITIALIZING and "
              f"RUNNING (submitted {rs['submitted_s']}, probe applied {rs['first_event_s']}):")
        for name, x in rs["tasks"].items():
            print(f"  {x['initializing_s']!s:>6} {x['running_s']!s:>6}  {name[:110]}")


def sizes_arg(text: str) -> list[int]:
    """``100000,10000`` -> [100000, 10000]; each a positive integer."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = [0]
    if any(x < 1 for x in out):
        msg = f"expected positive integers separated by commas, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--items", type=int, default=1_000_000, help="catalog size N")
    p.add_argument("--sizes", type=sizes_arg, default=[], help="smaller catalog sizes to run too (a scaling row each)")
    p.add_argument("--checkpoint-interval-ms", type=int, default=2000, help="the job's checkpoint interval")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for a load, checkpoint or restart")
    return run_benchmark("catalog", p, measure, argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark with parsed options; prints its table and returns the result."""
    started = time.monotonic()
    base = load_config()
    rows = []
    for n in sorted({*args.sizes, args.items}):
        rows.append(run_size(base, n, args))
        r = rows[-1]
        log.info("n=%d: %d upserts/s, checkpoint %s MiB, first event after restart %.2fs", n,
                 r["load"]["upserts_per_s"], mib(r["checkpoint"]["restored_disk_bytes"]),
                 r["restart"]["first_event_s"])
    result: dict[str, Any] = {
        "runs": rows,
        "setup": {"mode": "thread", "scoring": False, "parallelism": base.flink.parallelism,
                  "checkpoint_interval_ms": args.checkpoint_interval_ms, "poll_s": POLL_S,
                  "categories": len(CATEGORIES), "producer": PRODUCER_CONFIG},
        "wall_s": round(time.monotonic() - started),
    }
    print_table(rows)
    print_tasks(rows)
    return result


if __name__ == "__main__":
    main()
