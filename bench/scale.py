"""How the interest job's costs grow with the number of users: state, Redis, job memory, checkpoints.

    .venv/bin/streamrec bench scale [--json] [--quick] [--users 10000,100000,1000000] [--job-users 10000,100000]
    .venv/bin/python -m bench.scale [--divisor 30] [--json]

Synthetic users, drawn from the real ML-100k distributions: each user's history length is a real ML-100k
user's length divided by ``--divisor`` (rounded up, so 1..25 events, mean ~4 with the default 30; the real
mean is 106), items drawn from the ML-100k item popularity, ratings from its rating distribution, user ids
``u0000000``-style (8 characters). The divisor keeps a million users feasible; ``state_real_lengths``
measures a sample with the undivided lengths. It starts a private Kafka + Redis (``<run_dir>/bench-scale``).

1. **Offline, per user** (``--users``, cumulative: the first 10k users are the first 10k of the 100k):
   (a) the interest state as the job stores it: ``pickle.dumps`` of :class:`jobs.interest.UserState` after
   :func:`jobs.interest.apply_event` of the user's events (with the catalog's category facets): mean/p50/p99;
   (b) Redis: ``user:{id}`` and ``rec:{id}`` written with the writer's encodings (:class:`serving.store.UserView`,
   :func:`serving.store.encode_recommendations`; recommendation lists from the real model for a sample of
   users, reused round robin: only their size matters), ``MEMORY USAGE`` on a sample and the ``used_memory``
   delta (AOF off for this part), and ``user:{id}`` again with ``hash-max-listpack-value 1024``.
2. **The job end to end** (``--job-users``, cumulative, one job: thread mode, scoring, checkpoints every 5 s):
   after each step's events are all in Redis (audit topic), it waits for the next checkpoint triggered after
   that and measures the job's memory (RSS of the MiniCluster process group; JVM heap used after a full GC via
   ``jcmd``), the checkpoint (size from the JobManager's "Completed checkpoint" log line in
   ``<run_dir>/flink-log/``, size of its ``chk-N`` folder on disk, and its ``checkpointDuration`` from the same
   line: trigger to last acknowledgement, measured with the job idle) and Redis ``used_memory``.

Every cost gets a least-squares line against the number of users: the slope is the cost per user, and 1M is
extrapolated from it where it was not run. Prints tables; writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.audit import AuditLog
from bench.results import run_benchmark
from infra import stack
from jobs import launcher
from serving.store import UserView, connect, encode_recommendations, key
from streamrec.config import JobConfig, Settings, dump_config, load_config

History = list[tuple[str, int, float]]  # (item_id, ts, rating) in event-time order
TOP_INTERESTS = 10  # jobs.writer.TOP_INTERESTS (the writer module imports PyFlink)
REC_SAMPLE = 2000
MEMORY_SAMPLE = 2000
CHUNK = 10_000
COMPLETED = re.compile(r"Completed checkpoint (\d+) for job \w+ \((\d+) bytes, checkpointDuration=(\d+) ms")
TRIGGERED = re.compile(r"Triggering checkpoint (\d+) .*? @ (\d+) for job")


def quiet(*_: object) -> None:
    """A ``say`` that says nothing."""


# --------------------------------------------------------------------------------------------- synthetic users


class SyntheticUsers:
    """Users with histories drawn from ML-100k: lengths (divided), item popularity, ratings; deterministic."""

    def __init__(self, events: list[dict[str, Any]], items: list[dict[str, Any]], divisor: int, seed: int = 0) -> None:
        counts = Counter(e["item_id"] for e in events)
        self.items = list(counts)
        self.item_p = np.array([counts[i] for i in self.items], dtype=float) / len(events)
        ratings = Counter(float(e["value"]) for e in events)
        self.ratings = list(ratings)
        self.rating_p = np.array([ratings[v] for v in self.ratings], dtype=float) / len(events)
        self.real_lengths = np.array(list(Counter(e["user_id"] for e in events).values()))
        self.divisor = divisor
        self.facets = {it["item_id"]: tuple(f"category:{c}" for c in it.get("categories") or ()) for it in items}
        self.seed = seed
        self.t0 = int(time.time() * 1000) - 30 * 86_400_000  # histories within the last 30 days

    @staticmethod
    def user_id(j: int) -> str:
        return f"u{j:07d}"

    def histories(self, start: int, stop: int, divisor: int | None = None) -> Iterator[tuple[str, History]]:
        """Users ``start..stop-1``: (user id, [(item_id, ts, rating), ...] in event-time order)."""
        rng = np.random.default_rng([self.seed, start, stop, divisor or 0])
        div = divisor or self.divisor
        lengths = np.ceil(rng.choice(self.real_lengths, size=stop - start) / div).astype(int)
        total = int(lengths.sum())
        items = rng.choice(len(self.items), size=total, p=self.item_p)
        ratings = rng.choice(len(self.ratings), size=total, p=self.rating_p)
        begin = rng.integers(0, 25 * 86_400_000, size=stop - start)
        gaps = rng.exponential(600_000, size=total).astype(int)  # ~10 min between a user's events
        k = 0
        for j, n in enumerate(lengths.tolist()):
            ts = self.t0 + int(begin[j]) + np.cumsum(gaps[k : k + n])
            yield self.user_id(start + j), [
                (self.items[items[k + i]], int(ts[i]), self.ratings[ratings[k + i]]) for i in range(n)
            ]
            k += n


def build_state(user: str, history: History, cfg: JobConfig, facets: dict[str, tuple[str, ...]]) -> Any:
    """The user's UserState after the job's apply_event of each event (with the catalog's facets)."""
    from jobs.state import UserState, apply_event
    from streamrec.events import Event

    state = UserState(user)
    for item, ts, value in history:
        apply_event(state, Event(user, item, "rating", ts, value, "web"), cfg, facets.get(item, ()))
    return state


# --------------------------------------------------------------------------------------------- offline part


def info_used(r: Any) -> int:
    return int(r.info("memory")["used_memory"])


def offline(
    s: Settings, users: SyntheticUsers, points: list[int], recs: list[str], cfg: JobConfig
) -> list[dict[str, Any]]:
    """State size and Redis memory per user, at each point of ``points`` (cumulative users)."""
    r = connect(s.redis.url)
    r.config_set("appendonly", "no")
    r.flushdb()
    time.sleep(0.5)
    base = info_used(r)
    sizes: list[int] = []
    events = 0
    rows = []
    start = 0
    t_start = time.monotonic()
    for n in points:
        while start < n:
            stop = min(n, start + CHUNK)
            pipe = r.pipeline(transaction=False)
            for j, (user, history) in enumerate(users.histories(start, stop), start=start):
                state = build_state(user, history, cfg, users.facets)
                sizes.append(len(pickle.dumps(state)))  # as the job's ValueState holds it (PICKLED_BYTE_ARRAY)
                events += len(history)
                view = UserView(user, state.events, state.last_ts, state.recent_items(),
                                state.top_interests(TOP_INTERESTS))
                pipe.hset(key("user", user), mapping=view.to_hash())
                pipe.set(key("rec", user), recs[j % len(recs)])
            pipe.execute()
            start = stop
        used = info_used(r)
        sample = [users.user_id(j) for j in range(0, n, max(1, n // MEMORY_SAMPLE))]
        pipe = r.pipeline(transaction=False)
        for u in sample:
            pipe.memory_usage(key("user", u), samples=0)
            pipe.memory_usage(key("rec", u), samples=0)
            pipe.object("encoding", key("user", u))
        out = pipe.execute()
        arr = np.array(sizes)
        rows.append({
            "users": n,
            "events": events,
            "seconds": round(time.monotonic() - t_start, 1),
            "state_bytes_total": int(arr.sum()),
            "state_bytes_mean": round(float(arr.mean()), 1),
            "state_bytes_p50": int(np.percentile(arr, 50)),
            "state_bytes_p99": int(np.percentile(arr, 99)),
            "redis_used_memory_delta": used - base,
            "redis_bytes_per_user": round((used - base) / n, 1),
            "memory_usage_user_mean": round(float(np.mean(out[0::3])), 1),
            "memory_usage_rec_mean": round(float(np.mean(out[1::3])), 1),
            "user_hash_encodings": dict(Counter(x.decode() if isinstance(x, bytes) else str(x) for x in out[2::3])),
        })
    return rows


def listpack_variant(s: Settings, users: SyntheticUsers, cfg: JobConfig, n: int) -> dict[str, Any]:
    """``user:{id}`` hashes of n users with the default ``hash-max-listpack-value`` and with 1024 (db 1)."""
    r = connect(s.redis.url.rsplit("/", 1)[0] + "/1")
    default = int(r.config_get("hash-max-listpack-value")["hash-max-listpack-value"])
    views = [UserView(u, st.events, st.last_ts, st.recent_items(), st.top_interests(TOP_INTERESTS)).to_hash()
             for u, st in ((u, build_state(u, h, cfg, users.facets)) for u, h in users.histories(0, n))]
    out: dict[str, Any] = {"users": n, "default_value_limit": default}
    for limit in (default, 1024):
        r.config_set("hash-max-listpack-value", limit)
        r.flushdb()
        time.sleep(0.2)
        before = info_used(r)
        pipe = r.pipeline(transaction=False)
        for j, v in enumerate(views):
            pipe.hset(key("user", users.user_id(j)), mapping=v)
        pipe.execute()
        out[f"bytes_per_user_at_{limit}"] = round((info_used(r) - before) / n, 1)
        r.flushdb()
    r.config_set("hash-max-listpack-value", default)
    out["value_lengths_over_limit"] = round(
        float(np.mean([max(len(x) for x in v.values()) > default for v in views])), 3)
    return out


def real_length_states(users: SyntheticUsers, cfg: JobConfig, n: int) -> dict[str, Any]:
    """Pickled state of n users with the real (undivided) ML-100k history lengths."""
    sizes = np.array([len(pickle.dumps(build_state(u, h, cfg, users.facets)))
                      for u, h in users.histories(0, n, divisor=1)])
    lengths = np.array([len(h) for _, h in users.histories(0, n, divisor=1)])
    return {"users": n, "events_mean": round(float(lengths.mean()), 1), "bytes_mean": round(float(sizes.mean()), 1),
            "bytes_p50": int(np.percentile(sizes, 50)), "bytes_p99": int(np.percentile(sizes, 99)),
            "bytes_max": int(sizes.max())}


def sample_recs(users: SyntheticUsers, artifact: Path, cfg: JobConfig, catalog: list[str]) -> list[str]:
    """``rec:{id}`` values (the writer's encoding) for REC_SAMPLE users, scored by the real model."""
    from serving.scorer import Scorer

    scorer = Scorer(artifact, intra_op_threads=1)
    scorer.restrict_to(catalog)
    states = [build_state(u, h, cfg, users.facets) for u, h in users.histories(0, REC_SAMPLE)]
    lists = scorer.score([st.recent_items() for st in states], cfg.top_k, exclude=[st.seen for st in states])
    now = int(time.time() * 1000)
    return [encode_recommendations(items, scorer.version, now) for items in lists]


# --------------------------------------------------------------------------------------------- the job


def group_rss(pgid: int) -> dict[str, int]:
    """RSS bytes of each process in a process group (the job launcher and its MiniCluster JVM), by name."""
    out: dict[str, int] = defaultdict(int)
    page = os.sysconf("SC_PAGE_SIZE")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            if int(text.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            rss_pages = int((stat.parent / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[text[text.index("(") + 1 : text.rindex(")")]] += rss_pages * page
    return dict(out)


def jvm_pid(pgid: int) -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")] == "java" and int(text.rsplit(")", 1)[1].split()[2]) == pgid:
            return int(stat.parent.name)
    return None


def heap_after_gc(jvm: int) -> int | None:
    """JVM heap used (bytes) right after a full GC (``jcmd GC.run``, then ``GC.heap_info``)."""
    try:
        subprocess.run(["jcmd", str(jvm), "GC.run"], capture_output=True, timeout=60, check=True)
        info = subprocess.run(["jcmd", str(jvm), "GC.heap_info"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"heap\s+total\s+\d+K, used (\d+)K", info)
    return int(m.group(1)) * 1024 if m else None


def checkpoint_log(log_dir: Path) -> tuple[dict[int, int], dict[int, tuple[int, int]]]:
    """From the MiniCluster's log: checkpoint -> trigger epoch ms, and checkpoint -> (bytes, duration ms)."""
    triggered: dict[int, int] = {}
    completed: dict[int, tuple[int, int]] = {}
    for log in log_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        triggered.update((int(m.group(1)), int(m.group(2))) for m in TRIGGERED.finditer(text))
        completed.update((int(m.group(1)), (int(m.group(2)), int(m.group(3)))) for m in COMPLETED.finditer(text))
    return triggered, completed


def checkpoint_after(s: Settings, after_ms: int, timeout: float = 120.0) -> dict[str, Any]:
    """The first checkpoint triggered after ``after_ms`` (epoch) once complete: id, bytes, duration, disk size."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        triggered, completed = checkpoint_log(s.run_dir / "flink-log")
        later = sorted(n for n, t in triggered.items() if t > after_ms and n in completed)
        if later:
            n = later[0]
            disk = None
            for chk in s.run_path(s.flink.checkpoint_dir).glob(f"*/chk-{n}"):
                disk = sum(f.stat().st_size for f in chk.rglob("*") if f.is_file())
            return {"checkpoint": n, "bytes": completed[n][0], "duration_ms": completed[n][1], "disk_bytes": disk}
        time.sleep(0.2)
    msg = f"no checkpoint completed within {timeout:.0f}s"
    raise RuntimeError(msg)


def send_users(s: Settings, users: SyntheticUsers, start: int, stop: int, topic: str) -> dict[str, int]:
    """Send users start..stop-1's events (all interleaved in event-time order) as fast as kafka-python goes."""
    from kafka import KafkaProducer
    from kafka.partitioner.default import murmur2

    records = []
    want = {}
    for user, history in users.histories(start, stop):
        want[user] = len(history)
        kb = user.encode()
        part = (murmur2(kb) & 0x7FFFFFFF) % s.kafka.partitions
        for item, ts, value in history:
            records.append((ts, kb, part, item, value))
    records.sort(key=lambda r: r[0])  # stable: a user's events stay in order
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1,
                             enable_idempotence=False)
    for ts, kb, part, item, value in records:
        payload = json.dumps({"user_id": kb.decode(), "item_id": item, "type": "rating", "ts": ts, "value": value,
                              "scenario": "web"}, separators=(",", ":")).encode()
        producer.send(topic, key=kb, value=payload, partition=part)
    producer.flush()
    producer.close()
    return want


def run_job(
    s: Settings, users: SyntheticUsers, points: list[int], run_dir: Path, timeout: float, catalog: list[str]
) -> list[dict[str, Any]]:
    """One job; users 0..N-1 for each N of points (cumulative), measured after each step."""
    v = s.model_copy(update={"kafka": s.kafka.model_copy(update={"consumer_group": "bench-scale"})})
    r = connect(v.redis.url)
    r.flushdb()
    r.config_set("appendonly", "yes")  # as served (the offline part turned it off)
    audit = AuditLog(v.kafka.bootstrap, v.kafka.recommendations_topic, keep_records=False)
    launcher.start(v, str(dump_config(v, run_dir / "scale.yaml")), say=quiet, timeout=300, resume=False)
    pgid = launcher.status(v)["pids"][0]
    rows = []
    sent: Counter[str] = Counter()  # every user's events sent so far (the steps add users)
    last_chk = 0
    try:
        # The catalog first (every item:{id} in Redis), so every user's state gets its category facets.
        item_keys = [key("item", i) for i in catalog]
        deadline = time.monotonic() + 300
        while r.exists(*item_keys) < len(item_keys) and time.monotonic() < deadline:
            time.sleep(0.5)
        prev = 0
        for n in [0, *points]:
            t0 = time.monotonic()
            # N=0: a handful of users warm the job up (tasks running, model loaded, catalog read).
            want = send_users(v, users, prev, n, v.kafka.events_topic) if n else send_users_warm(v)
            sent_s = time.monotonic() - t0
            sent.update(want)
            if not audit.wait(sent, timeout):
                msg = f"the job did not apply {sent.total()} events within {timeout:.0f}s"
                raise RuntimeError(msg)
            drained = int(time.time() * 1000)
            seconds = time.monotonic() - t0
            chk = checkpoint_after(v, drained + 200)
            _, completed = checkpoint_log(v.run_dir / "flink-log")
            during = [completed[c][1] for c in completed if last_chk < c < chk["checkpoint"]]
            last_chk = chk["checkpoint"]
            jvm = jvm_pid(pgid)
            rss = group_rss(pgid)
            rows.append({
                "users": n,
                "events": sum(want.values()),
                "send_s": round(sent_s, 1),
                "apply_s": round(seconds, 1),
                "events_per_s": round(sum(want.values()) / seconds) if n else None,
                **chk,
                "checkpoints_during_load": len(during),
                "checkpoint_ms_during_load_max": max(during, default=None),
                "rss_total": sum(rss.values()),
                "rss_jvm": rss.get("java"),
                "heap_used_after_gc": heap_after_gc(jvm) if jvm else None,
                "redis_used_memory": info_used(r),
                "redis_keys": int(r.dbsize()),
            })
            print(f"job: {n:>8} users: {rows[-1]['events']} events in {seconds:.0f}s, checkpoint "
                  f"{chk['bytes']} B / {chk['duration_ms']} ms, RSS {rows[-1]['rss_total'] / 2**20:.0f} MiB, "
                  f"heap {(rows[-1]['heap_used_after_gc'] or 0) / 2**20:.0f} MiB", flush=True)
            prev = n
    finally:
        launcher.stop(v, say=quiet)
        audit.close()
    return rows


def send_users_warm(s: Settings) -> dict[str, int]:
    """20 events of 10 warm-up users (``warm-<i>``), outside the synthetic population."""
    from jobs.producer import EventProducer

    now = int(time.time() * 1000)
    with EventProducer(s.kafka.bootstrap, s.kafka.events_topic) as p:
        for i in range(20):
            p.send({"user_id": f"warm-{i % 10}", "item_id": "50", "type": "rating", "ts": now + i, "value": 4.0,
                    "scenario": "web"})
    return {f"warm-{i}": 2 for i in range(10)}


# --------------------------------------------------------------------------------------------- report


def fit(xs: list[int], ys: list[float | int | None]) -> dict[str, float] | None:
    """Least-squares line y = slope * x + intercept (None with fewer than two points)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    if len(pts) < 2:
        return None
    slope, intercept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    return {"slope": round(float(slope), 6), "intercept": round(float(intercept), 1)}


def mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the tables (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", default="10000,100000,1000000", help="offline points (cumulative users)")
    p.add_argument("--job-users", default="10000,100000", help="end-to-end points ('' to skip the job)")
    p.add_argument("--quick", action="store_true", help="1k and 10k users only")
    p.add_argument("--divisor", type=int, default=30, help="real ML-100k history lengths are divided by this")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds the job may take per step")
    return run_benchmark("scale", p, measure, argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark with parsed options; prints its tables and returns the result."""
    from model_export.artifact.registry import Registry
    from model_export.data.datasets import load_dataset
    from model_export.pipeline import train_and_export_events
    from model_export.train import TrainConfig
    points = [1000, 10_000] if args.quick else [int(x) for x in args.users.split(",") if x]
    job_points = [1000, 10_000] if args.quick else [int(x) for x in args.job_users.split(",") if x]
    started = time.monotonic()
    base = load_config()
    run_dir = base.run_dir / "bench-scale"
    s = stack.isolated_settings(base, run_dir)
    s = s.model_copy(update={"flink": s.flink.model_copy(update={"checkpoint_interval_ms": 5000})})
    cfg = s.job
    data = load_dataset("ml-100k")
    users = SyntheticUsers(data.events, data.items, args.divisor)
    job_rows: list[dict[str, Any]] = []
    try:
        stack.up(s, say=quiet)
        artifact = train_and_export_events(data.events[:20_000], run_dir / "artifacts", name="bench",
                                           config=TrainConfig(epochs=1))
        reg = Registry(run_dir / "models")
        reg.promote(reg.publish(artifact))
        recs = sample_recs(users, artifact, cfg, [it["item_id"] for it in data.items])
        real = real_length_states(users, cfg, 2000)
        rows = offline(s, users, points, recs, cfg)
        for row in rows:
            print(f"offline: {row['users']:>8} users, {row['events']} events, state {row['state_bytes_mean']} B/user, "
                  f"Redis {row['redis_bytes_per_user']} B/user ({row['seconds']}s)", flush=True)
        listpack = listpack_variant(s, users, cfg, min(points[-1], 20_000))
        if job_points:
            from jobs.producer import EventProducer

            with EventProducer(s.kafka.bootstrap, s.kafka.events_topic) as prod:
                for item in data.items:
                    prod.send_item(item)
            job_rows = run_job(s, users, job_points, run_dir, args.timeout, [it["item_id"] for it in data.items])
    finally:
        stack.down(s, say=quiet)

    xs = [r["users"] for r in rows]
    slopes = {
        "state_bytes": fit(xs, [r["state_bytes_total"] for r in rows]),
        "redis_used_memory": fit(xs, [r["redis_used_memory_delta"] for r in rows]),
    }
    jx = [r["users"] for r in job_rows]
    for name in ("rss_total", "rss_jvm", "heap_used_after_gc", "bytes", "disk_bytes", "duration_ms",
                 "redis_used_memory"):
        if job_rows:
            slopes[f"job_{name}"] = fit(jx, [r[name] for r in job_rows])
    extrapolated = {}
    if job_rows and 1_000_000 not in jx:
        for name in ("rss_total", "heap_used_after_gc", "bytes", "duration_ms"):
            line = slopes.get(f"job_{name}")
            if line:
                extrapolated[name] = round(line["slope"] * 1_000_000 + line["intercept"])
    result: dict[str, Any] = {
        "history": {"divisor": args.divisor, "events_per_user_mean": round(rows[-1]["events"] / rows[-1]["users"], 2),
                    "real_events_per_user_mean": round(float(users.real_lengths.mean()), 1)},
        "offline": rows,
        "state_real_lengths": real,
        "redis_user_hash_listpack": listpack,
        "job": job_rows,
        "slopes_per_user": slopes,
        "job_extrapolated_1m_users": extrapolated or None,
        "wall_s": round(time.monotonic() - started),
    }

    print(f"\nhistories: ML-100k lengths / {args.divisor} -> {result['history']['events_per_user_mean']} events/user "
          f"(real: {result['history']['real_events_per_user_mean']})")
    print(f"{'users':>9} {'events':>9} {'state B/user':>13} {'p50':>6} {'p99':>6} {'state MiB':>10} "
          f"{'Redis B/user':>13} {'user: B':>8} {'rec: B':>7} {'Redis MiB':>10}")
    for r in rows:
        print(f"{r['users']:>9} {r['events']:>9} {r['state_bytes_mean']:>13} {r['state_bytes_p50']:>6} "
              f"{r['state_bytes_p99']:>6} {mib(r['state_bytes_total']):>10} {r['redis_bytes_per_user']:>13} "
              f"{r['memory_usage_user_mean']:>8} {r['memory_usage_rec_mean']:>7} "
              f"{mib(r['redis_used_memory_delta']):>10}")
    print(f"real-length users ({real['events_mean']} events): state {real['bytes_mean']} B/user "
          f"(p50 {real['bytes_p50']}, p99 {real['bytes_p99']}, max {real['bytes_max']})")
    limit = listpack["default_value_limit"]
    print(f"user:{{id}} hash: {listpack[f'bytes_per_user_at_{limit}']} B/user with "
          f"hash-max-listpack-value {listpack['default_value_limit']}, {listpack['bytes_per_user_at_1024']} B/user "
          f"with 1024 ({listpack['value_lengths_over_limit']:.0%} of users have a value over the default)")
    if job_rows:
        print(f"\n{'job users':>9} {'events':>8} {'ev/s':>6} {'RSS MiB':>8} {'JVM MiB':>8} {'heap MiB':>9} "
              f"{'chk MiB':>8} {'disk MiB':>9} {'chk ms':>7} {'chk ms load':>12} {'Redis MiB':>10}")
        for r in job_rows:
            print(f"{r['users']:>9} {r['events']:>8} {r['events_per_s']!s:>6} {mib(r['rss_total']):>8} "
                  f"{mib(r['rss_jvm']):>8} {mib(r['heap_used_after_gc']):>9} {mib(r['bytes']):>8} "
                  f"{mib(r['disk_bytes']):>9} {r['duration_ms']:>7} {r['checkpoint_ms_during_load_max']!s:>12} "
                  f"{mib(r['redis_used_memory']):>10}")
    print("\nslopes (least squares, per user):")
    for name, line in slopes.items():
        if line and "duration" in name:
            print(f"  {name:24} {line['slope'] * 1e5:>10.1f} ms per 100k users (intercept {line['intercept']:.0f} ms)")
        elif line:
            print(f"  {name:24} {line['slope']:>10.1f} B/user   (intercept {mib(line['intercept'])} MiB)")
    if extrapolated:
        print("job at 1M users, extrapolated (not run): " + ", ".join(
            f"{k} {v / 2**20:.0f} MiB" if k != "duration_ms" else f"checkpoint {v / 1000:.1f} s"
            for k, v in extrapolated.items()))
    return result


if __name__ == "__main__":
    main()
