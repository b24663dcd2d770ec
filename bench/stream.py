"""Throughput and freshness of the interest job: saturation, then event-to-Redis freshness at fixed rates.

    .venv/bin/streamrec bench stream [--json] [--rates 500,1000,sat] [--duration 15] [--profile]
    .venv/bin/python -m bench.stream [--events N] [--modes thread,process] [--users 10000] [--json]

It starts a private Kafka + Redis (``<run_dir>/bench-stream``), publishes the ML-100k catalog to ``items``
and trains + promotes a 1-epoch model, then:

1. **Saturation** (``saturation`` in the JSON): loads ``--events`` MovieLens-100k events into ``events``; for
   each mode x {state only (no promoted model), scoring} it starts the job from the beginning of the topic
   and times how long until every user's ``user:{id}.events`` in Redis equals the number of events sent
   (Kafka -> Flink -> Redis, start-up excluded: the clock starts at the first user written to Redis once the
   whole catalog is, and the events already applied then are not counted).
2. **Fixed rates** (``rates``): one job (thread mode, scoring) on its own topics. Per offered rate (``sat`` is
   the thread-scoring saturation just measured), a paced producer in a child process sends
   ``rate x --duration`` events and records each event's wall-clock send time. Events: items drawn from the
   ML-100k item popularity, ratings from its rating distribution, users from a pool of ``--users`` fresh
   users per phase (so phases never mix) weighted by the real ML-100k per-user activity. A background consumer
   reads the writer's audit records (``user_id``, ``events``, ``written_at``) from the recommendations topic.
   An event's freshness is ``written_at`` of the user's first audit record whose ``events`` count reaches the
   event's index in that user's sequence, minus its send time (producer linger + Kafka + Flink + scoring +
   Redis). After each phase the job drains before the next one starts. ``--profile`` adds a last 10 s phase
   at twice the saturation rate, sampled while saturated: CPU per JVM thread (/proc), their names (``jstack``)
   and two ``py-spy record`` samplers on the embedded interpreter (threads running Python; the GIL holder).

Per rate it reports the achieved send rate, the processed rate (the phase's events applied per second, first
to last Redis write), freshness p50/p99/max, events matched / sent, and backpressure: the lag (events sent
but not yet in Redis) when the producer stopped, the largest lag, and the time to drain after the producer
stopped. Prints tables; writes ``bench/results/stream.json``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.audit import AuditLog
from bench.results import run_benchmark
from infra import stack
from jobs import launcher
from serving.store import connect, key, wait_for_events
from streamrec.config import Settings, dump_config, load_config

RATES_EVENTS_TOPIC = "bench.events"
WARMUP_S = 45.0
RATES_AUDIT_TOPIC = "bench.recommendations"
# kafka-python at ~25-30k records/s on one core: records carry their partition (no Python murmur2 per send),
# acks=1 and no idempotence (no per-batch sequence bookkeeping), batches of up to 256 KiB after 5 ms.
PRODUCER_CONFIG: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "acks": 1,
    "enable_idempotence": False,
    "metrics_enabled": False,
}


def quiet(*_: object) -> None:
    """A ``say`` that says nothing."""


def variant_settings(s: Settings, name: str, mode: str, scoring: bool, run_dir: Path, **kafka: str) -> Settings:
    """The job's settings for one run: execution mode, its own consumer group, a registry with or without a model."""
    return s.model_copy(
        update={
            "flink": s.flink.model_copy(update={"python_execution_mode": mode}),
            "kafka": s.kafka.model_copy(update={"consumer_group": f"bench-{name}", **kafka}),
            "models": s.models.model_copy(update={"registry_dir": str(run_dir / ("models" if scoring else "none"))}),
        }
    )


# --------------------------------------------------------------------------------------------- saturation


def job_jvm(pid: int) -> int | None:
    """The MiniCluster JVM: the ``java`` process in the job launcher's process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        pgrp = int(text.rsplit(")", 1)[1].split()[2])
        if comm == "java" and pgrp == pid:
            return int(stat.parent.name)
    return None


def process_ticks(pid: int | None) -> int:
    """User + system CPU ticks of a process so far (all its threads); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU use of named processes and of the whole machine between :meth:`start` and :meth:`stop`, in % of a core.

    With ``jvm`` (the job's JVM pid), also per Flink task (thread names from ``jstack``: one task thread per chain
    of operators; in thread mode the Python writer runs on its task's thread) in :attr:`stages`.
    """

    def __init__(self, pids: dict[str, int | None], jvm: int | None = None) -> None:
        self.pids = pids
        self.jvm = jvm
        self.before: dict[str, int] = {}
        self.threads0: dict[int, tuple[str, int]] = {}
        self.stages: dict[str, float] = {}
        self.t0 = 0.0
        self.machine0 = (0, 0)

    def start(self) -> None:
        self.before = {name: process_ticks(pid) for name, pid in self.pids.items()}
        self.threads0 = thread_ticks(self.jvm) if self.jvm else {}
        self.t0, self.machine0 = time.monotonic(), machine_ticks()

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        hz = os.sysconf("SC_CLK_TCK")
        out = {name: round((process_ticks(pid) - self.before[name]) / hz / elapsed * 100, 1)
               for name, pid in self.pids.items()}
        busy, total = machine_ticks()
        cores = os.cpu_count() or 1
        out["machine"] = round((busy - self.machine0[0]) / max(total - self.machine0[1], 1) * 100 * cores, 1)
        out["others"] = round(out["machine"] - sum(v for k, v in out.items() if k != "machine"), 1)
        if self.jvm:
            self.stages = task_cpu(self.jvm, self.threads0, elapsed)
        return out


def task_cpu(jvm: int, before: dict[int, tuple[str, int]], elapsed: float) -> dict[str, float]:
    """% of a core per Flink task of the JVM since ``before``; other threads by name (digits as N), >= 0.5 %."""
    after = thread_ticks(jvm)
    dump = subprocess.run(["jstack", str(jvm)], capture_output=True, text=True, check=False).stdout
    names = {int(m.group(2), 16): m.group(1) for m in re.finditer(r'^"(.+?)".*?nid=0x([0-9a-f]+)', dump, re.M)}
    hz = os.sysconf("SC_CLK_TCK")
    out: Counter[str] = Counter()
    for tid, (comm, ticks) in after.items():
        cpu = (ticks - before.get(tid, (comm, 0))[1]) / hz / elapsed * 100
        name = names.get(tid, "")
        # Task threads: "<chain of operator names> (1/2)#0"; onnxruntime's threads are native (no Java name).
        task = re.sub(r" \(\d+/\d+\)#\d+$", "", name) if re.search(r"\(\d+/\d+\)#\d+$", name) else ""
        other = "jvm: " + re.sub(r"\d+", "N", name) if name else "native threads (onnxruntime, Python)"
        out[task or other] += cpu
    return {k: round(v, 1) for k, v in out.most_common() if v >= 0.5}


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """Per thread of pid: (name, user + system CPU ticks so far)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(task.name)] = (stat[stat.index("(") + 1 : stat.rindex(")")], int(fields[11]) + int(fields[12]))
    return out


def py_spy_top(path: Path, total_possible: float) -> dict[str, Any]:
    """Summarise a ``py-spy record --format raw`` file: samples per thread, own and inclusive frames."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines() if path.exists() else ():
        stack_str, _, count_str = line.rpartition(" ")
        if not count_str.isdigit():
            continue
        count = int(count_str)
        frames = stack_str.split(";")
        total += count
        per_thread[frames[0]] += count
        py_frames = [re.sub(r" \((.*/)?(site-packages/)?", " (", f) for f in frames[1:]]
        if py_frames:
            own[py_frames[-1]] += count
            for f in set(py_frames):
                inclusive[f] += count

    def share(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"frame": f, "share": round(c / total, 3)} for f, c in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "busy_fraction": round(total / total_possible, 3),
        "threads": [{"thread": t, "share": round(c / total, 3)} for t, c in per_thread.most_common(6)] if total else [],
        "own_top": share(own, 15),
        "inclusive_top": share(inclusive, 30),
    }


def profile_jvm(jvm: int, out: Path, seconds: float, rate: int = 100) -> dict[str, Any]:
    """Sample the job's JVM for ``seconds``: CPU per thread (/proc), thread names (``jstack``), Python (py-spy).

    Two py-spy samplers run side by side (``--nonblocking``, no pauses): one records the threads running
    Python code, the other (``--gil``) only the thread holding the embedded interpreter's GIL, so its
    samples / (rate x seconds) is the share of the time the GIL was held.
    """
    out.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy")
    spies = {}
    for name, extra in (("active", []), ("gil", ["--gil"])):
        cmd = [py_spy, "record", "--pid", str(jvm), "--duration", str(int(seconds)), "--rate", str(rate),
               "--nonblocking", "--threads", "--format", "raw", "--output", str(out / f"py-spy-{name}.txt"), *extra]
        spies[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before, t0 = thread_ticks(jvm), time.monotonic()
    time.sleep(seconds)
    after, elapsed = thread_ticks(jvm), time.monotonic() - t0
    stack_dump = subprocess.run(["jstack", str(jvm)], capture_output=True, text=True, check=False).stdout
    (out / "jstack.txt").write_text(stack_dump)
    errors = {}
    for name, spy in spies.items():
        _, err = spy.communicate(timeout=seconds + 30)
        if spy.returncode:
            errors[name] = err.strip()[-300:]
    names = {int(m.group(2), 16): m.group(1) for m in re.finditer(r'^"(.+?)".*?nid=0x([0-9a-f]+)', stack_dump, re.M)}
    hz = os.sysconf("SC_CLK_TCK")
    threads: list[dict[str, Any]] = []
    for tid, (comm, ticks) in after.items():
        cpu = (ticks - before.get(tid, (comm, 0))[1]) / hz / elapsed * 100
        if cpu >= 0.5:
            # Threads onnxruntime starts inherit their creator's name but are not Java threads.
            threads.append({"tid": tid, "cpu_pct": round(cpu, 1), "name": names.get(tid, f"{comm} (native)")})
    threads.sort(key=lambda t: -t["cpu_pct"])
    return {
        "seconds": seconds,
        "jvm_cpu_pct_total": round(sum(t["cpu_pct"] for t in threads), 1),
        "jvm_threads_busiest": threads[:14],
        "python_active": py_spy_top(out / "py-spy-active.txt", rate * seconds),
        "python_gil": py_spy_top(out / "py-spy-gil.txt", rate * seconds),
        "py_spy_errors": errors or None,
        "files": str(out),
    }


def run_variant(
    s: Settings, name: str, mode: str, scoring: bool, want: Counter[str], run_dir: Path, catalog: list[str]
) -> dict[str, Any]:
    """One job run over the whole topic; returns its events/s and the job's CPU per event.

    The clock starts at the first user written to Redis once every catalog item is (``item:{id}``), so the
    job's start-up burst of catalog upserts is not counted against the events (at the first user written when
    the events are all applied before the catalog is). With scoring, it also waits
    (at most 30 s) for every user's ``rec:{id}``: the scorer may lag the state path by a bounded staleness.
    """
    item_keys = [key("item", i) for i in catalog]
    v = variant_settings(s, name, mode, scoring, run_dir)
    r = connect(v.redis.url)
    r.flushdb()
    config = dump_config(v, run_dir / f"{name}.yaml")
    total = sum(want.values())
    job = launcher.start(v, str(config), say=quiet, timeout=300, resume=False)
    jvm = job_jvm(job["pid"])
    try:
        first: tuple[float, int, int] | None = None  # (when, events applied, JVM CPU ticks) at the first poll
        first_any: tuple[float, int, int] | None = None  # the same at the first poll with any event applied
        now, done = 0.0, 0

        def polled(applied: int) -> None:
            nonlocal first, first_any, now, done
            now, done = time.monotonic(), applied
            if applied and first_any is None:
                first_any = now, applied, process_ticks(jvm)
            if applied and first is None and (not item_keys or r.exists(*item_keys) == len(item_keys)):
                first = now, applied, process_ticks(jvm)

        wait_for_events(r, want, math.inf, 0.05, on_poll=polled)
        ticks = process_ticks(jvm)
        if first is None or first[1] == total:  # the events were applied before the catalog was complete
            first = first_any or (now, done, ticks)
        first_at, first_done, first_ticks = first
        seconds = max(now - first_at, 1e-9)
        events = max(total - first_done, 1)
        cpu_s = (ticks - first_ticks) / os.sysconf("SC_CLK_TCK")
        recs, deadline = 0, time.monotonic() + (30 if scoring else 0)
        while True:
            recs = sum(r.exists(*[key("rec", u) for u in chunk]) for chunk in _chunks(list(want), 500))
            if recs == len(want) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return {"variant": name, "mode": mode, "scoring": scoring, "events": total - first_done,
                "seconds": round(seconds, 2), "events_per_s": round(events / seconds),
                "job_cpu_pct": round(cpu_s / seconds * 100, 1), "job_cpu_us_per_event": round(cpu_s * 1e6 / events, 1),
                "users_with_recs": recs, "recs_complete_after_s": round(time.monotonic() - now, 2)}
    finally:
        launcher.stop(v, say=quiet)


def _chunks(xs: list[str], n: int) -> list[list[str]]:
    return [xs[i : i + n] for i in range(0, len(xs), n)]


# --------------------------------------------------------------------------------------------- fixed rates


class Workload:
    """Synthetic events from the real ML-100k distributions: item popularity, ratings, per-user activity."""

    def __init__(self, events: list[dict[str, Any]], seed: int = 0) -> None:
        items = Counter(e["item_id"] for e in events)
        self.items = list(items)
        self.item_p = np.array([items[i] for i in self.items], dtype=float) / len(events)
        ratings = Counter(float(e["value"]) for e in events)
        self.ratings = list(ratings)
        self.rating_p = np.array([ratings[v] for v in self.ratings], dtype=float) / len(events)
        self.activity = np.array(list(Counter(e["user_id"] for e in events).values()), dtype=float)
        self.rng = np.random.default_rng(seed)

    def phase(self, prefix: str, n: int, users: int, start_ms: int, rate: float, partitions: int) -> dict[str, Any]:
        """Pre-encode n events of ``users`` fresh users (ids ``prefix-<i>``), ``ts`` = the planned send time."""
        from kafka.partitioner.default import murmur2

        weights = self.rng.choice(self.activity, size=users)
        who = self.rng.choice(users, size=n, p=weights / weights.sum())
        what = self.rng.choice(len(self.items), size=n, p=self.item_p)
        value = self.rng.choice(len(self.ratings), size=n, p=self.rating_p)
        ids = [f"{prefix}-{u}" for u in range(users)]
        keys = [i.encode() for i in ids]
        part_of = [(murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]  # the Java client's default partitioner
        values, user_of, parts = [], [], []
        for j in range(n):
            u = int(who[j])
            values.append(json.dumps(
                {"user_id": ids[u], "item_id": self.items[what[j]], "type": "rating",
                 "ts": start_ms + int(j * 1000 / rate), "value": self.ratings[value[j]], "scenario": "web"},
                separators=(",", ":")).encode())
            user_of.append(ids[u])
            parts.append(part_of[u])
        return {"keys": [keys[int(u)] for u in who], "values": values, "partitions": parts, "users": user_of}


def paced_send(
    bootstrap: str, topic: str, keys: list[bytes], values: list[bytes], partitions: list[int], rate: float,
    start_at: float, out: str, progress: Any,
) -> None:
    """Child process: send ``values[j]`` at ``start_at + j / rate`` (epoch s); saves each send time to ``out``."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_CONFIG)
    producer.partitions_for(topic)  # metadata before the clock starts
    n = len(values)
    sent_at = np.zeros(n)
    send = producer.send
    clock = time.time
    time.sleep(max(0.0, start_at - clock()))
    cpu0 = os.times()
    j = 0
    while j < n:
        due = min(n, int((clock() - start_at) * rate) + 1)
        while j < due:
            sent_at[j] = clock()
            send(topic, key=keys[j], value=values[j], partition=partitions[j])
            j += 1
        progress.value = j
        if j < n:
            time.sleep(max(0.0, start_at + j / rate - clock()))
    send_end = clock()
    cpu1 = os.times()
    producer.flush()
    flushed = clock()
    producer.close()
    np.save(out, sent_at)
    info = {"send_end": send_end, "flushed": flushed, "cpu_s": cpu1.user + cpu1.system - cpu0.user - cpu0.system}
    Path(out).with_suffix(".json").write_text(json.dumps(info))


def freshness(
    sent: dict[str, list[float]], records: dict[str, list[tuple[int, int]]]
) -> tuple[list[float], list[float]]:
    """Per event (send time, written_at in s; NaN when never written), matched per user by event index."""
    send_t, write_t = [], []
    for user, times in sent.items():
        recs = sorted(records.get(user, ()))
        written = [w / 1000 for w, _ in recs]
        reach, high = [], 0
        for _, events in recs:  # most events seen by each record (in written order)
            high = max(high, events)
            reach.append(high)
        for i, t in enumerate(times, start=1):
            k = bisect.bisect_left(reach, i)  # first record whose events count reaches event i
            send_t.append(t)
            write_t.append(written[k] if k < len(written) else float("nan"))
    return send_t, write_t


def run_rate(
    s: Settings, work: Workload, audit: AuditLog, label: str, rate: float, duration: float, users: int,
    run_dir: Path, drain_timeout: float, meter: CpuMeter | None = None, profile: int | None = None,
) -> dict[str, Any]:
    """One phase at a fixed offered rate; returns its freshness, backpressure and CPU figures.

    ``meter`` measures the CPU of the job, Kafka, Redis and this process (the audit consumer) while the
    producer sends; the producer process reports its own. ``profile`` (the job's JVM pid) samples the job
    with :func:`profile_jvm` from 2 s after the producer starts, for ``duration - 4`` seconds.
    """
    n = max(1, int(rate * duration))
    start_at = time.time() + 3.0  # room to encode and start the producer process
    ev = work.phase(f"{label}", n, users, int(start_at * 1000), rate, s.kafka.partitions)
    out = run_dir / f"sent-{label}.npy"
    ctx = mp.get_context("spawn")
    progress = ctx.Value("q", 0)
    child = ctx.Process(
        target=paced_send,
        args=(s.kafka.bootstrap, RATES_EVENTS_TOPIC, ev["keys"], ev["values"], ev["partitions"], rate,
              start_at, str(out), progress),
        daemon=True,
    )
    child.start()
    prof: dict[str, Any] = {}
    sampler = None
    if profile is not None:
        def sample(jvm: int = profile) -> None:
            time.sleep(max(0.0, start_at + 2.0 - time.time()))
            prof.update(profile_jvm(jvm, run_dir / "profile", max(2.0, duration - 4.0)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    time.sleep(max(0.0, start_at - time.time()))
    if meter is not None:
        meter.start()
    while child.is_alive() and progress.value < n:
        time.sleep(0.02)
    cpu = meter.stop() if meter is not None else {}
    child.join()
    if child.exitcode != 0:
        msg = f"the producer process exited with {child.exitcode}"
        raise RuntimeError(msg)
    sent_at = np.load(out)
    send_info = json.loads(out.with_suffix(".json").read_text())
    if cpu:
        cpu["producer"] = round(send_info["cpu_s"] / max(float(sent_at.max() - sent_at.min()), 1e-9) * 100, 1)
        cpu["others"] = round(cpu["others"] - cpu["producer"], 1)
    per_user: dict[str, list[float]] = defaultdict(list)
    for u, t in zip(ev["users"], sent_at.tolist(), strict=True):
        per_user[u].append(t)
    counts = {u: len(t) for u, t in per_user.items()}
    drained = audit.wait(counts, drain_timeout)
    time.sleep(0.5)  # the last audit records of the phase
    if sampler is not None:
        sampler.join(timeout=120)
    send_t, write_t = (np.array(a) for a in freshness(per_user, audit.records))
    ok = ~np.isnan(write_t)
    fresh_ms = (write_t[ok] - send_t[ok]) * 1000
    # The same for rec:{id}: the first recommendation write that had seen the event (coalesced: it may lag).
    rec_send, rec_write = (np.array(a) for a in freshness(per_user, audit.scored))
    rec_ok = ~np.isnan(rec_write)
    rec_ms = (rec_write[rec_ok] - rec_send[rec_ok]) * 1000
    scored_at = np.sort(np.array([w / 1000 for u in per_user for w, _ in audit.scored.get(u, ())]))
    first_send, last_send = float(sent_at.min()), float(sent_at.max())
    writes = np.sort(write_t[ok])
    last_write = float(writes[-1]) if len(writes) else float("nan")
    # Lag (sent, not yet in Redis) over time, from the matched times: exact, not sampled.
    sends_sorted = np.sort(send_t)
    grid = np.linspace(first_send, max(last_write, last_send), 41)
    lag = np.searchsorted(sends_sorted, grid, side="right") - np.searchsorted(writes, grid, side="right")
    at_sends = np.arange(1, len(sends_sorted) + 1) - np.searchsorted(writes, sends_sorted, side="right")
    at_end = int(at_sends[-1])
    last_event = int(np.argmax(send_t))
    span = float(writes[-1] - writes[0]) if len(writes) > 1 else float("nan")

    def pct(q: float, ms: np.ndarray = fresh_ms) -> float | None:
        return round(float(np.percentile(ms, q)), 1) if len(ms) else None

    scored_span = float(scored_at[-1] - scored_at[0]) if len(scored_at) > 1 else float("nan")
    sent_rate = (n - 1) / (last_send - first_send) if n > 1 and last_send > first_send else rate

    return {
        "label": label,
        "offered": round(rate),
        "achieved": round((len(writes) - 1) / span) if span > 0 else None,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": pct(100),
        "mean_ms": round(float(fresh_ms.mean()), 1) if len(fresh_ms) else None,
        "rec_p50_ms": pct(50, rec_ms),
        "rec_p99_ms": pct(99, rec_ms),
        "rec_matched": int(rec_ok.sum()),
        "users_scored": len(scored_at),
        "users_scored_per_s": round((len(scored_at) - 1) / scored_span) if scored_span > 0 else None,
        "sent": n,
        "matched": int(ok.sum()),
        "users": len(per_user),
        "sent_per_s": round((n - 1) / (last_send - first_send)) if n > 1 and last_send > first_send else None,
        "send_seconds": round(last_send - first_send, 2),
        "producer_flush_s": round(send_info["flushed"] - send_info["send_end"], 3),
        "lag_at_end": at_end,
        "lag_at_end_s": round(float(write_t[last_event] - send_t[last_event]), 2) if ok[last_event] else None,
        "max_lag": int(at_sends.max()),
        "drain_s": round(last_write - last_send, 2) if drained else None,
        "drained": drained,
        "cpu_pct_while_sending": cpu,
        # CPU time per event sent while sending (a core's % / events per second).
        "cpu_us_per_event": {k: round(v / 100 * 1e6 / sent_rate, 1) for k, v in cpu.items()} if cpu else {},
        "task_cpu_pct_while_sending": dict(meter.stages) if meter is not None else {},
        "task_cpu_us_per_event": {k: round(v / 100 * 1e6 / sent_rate, 1) for k, v in meter.stages.items()}
        if meter is not None else {},
        **({"profile": prof} if profile is not None else {}),
        "lag_timeline": [[round(float(g - first_send), 1), int(x)] for g, x in zip(grid, lag, strict=True)],
    }


def run_rates(
    s: Settings, run_dir: Path, work: Workload, rates: list[tuple[str, float]], duration: float, users: int,
    drain_timeout: float, profile_rate: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Start one job (thread mode, scoring) on its own topics; one phase per rate, draining in between.

    With ``profile_rate``, a last phase at that rate (above saturation) is sampled with :func:`profile_jvm`.
    Returns the rows and that phase's row (None without it).
    """
    from infra.kafka_broker import ensure_topics

    ensure_topics(s.kafka.bootstrap, [RATES_EVENTS_TOPIC, RATES_AUDIT_TOPIC], s.kafka.partitions)
    v = variant_settings(s, "rates", "thread", True, run_dir,
                         events_topic=RATES_EVENTS_TOPIC, recommendations_topic=RATES_AUDIT_TOPIC)
    connect(v.redis.url).flushdb()
    audit = AuditLog(v.kafka.bootstrap, RATES_AUDIT_TOPIC)
    launcher.start(v, str(dump_config(v, run_dir / "rates.yaml")), say=quiet, timeout=300, resume=False)
    rows = []
    services = stack.read_state(v)
    jvm = job_jvm(launcher.status(v)["pids"][0])
    meter = CpuMeter({"job": jvm, "kafka": services["kafka"]["pid"], "redis": services["redis"]["pid"],
                      "bench": os.getpid()}, jvm=jvm)
    try:
        # Warm-up: the job's tasks running, the catalog published (item:{id} in Redis), the model loaded.
        r, item_keys = connect(v.redis.url), [key("item", i) for i in work.items]
        deadline = time.monotonic() + 300
        while r.exists(*item_keys) < len(item_keys) and time.monotonic() < deadline:
            time.sleep(0.5)
        # Then a warm-up at the first rate for WARMUP_S (its own users): the JVM's JIT compilers take about a core
        # for the first minute of a job; the phases measure the job as it runs after that, not its start-up.
        warm_rate = rates[0][1] if rates else 200.0
        warm = run_rate(v, work, audit, "warmup", warm_rate, WARMUP_S, users, run_dir, 300.0)
        if not warm["drained"]:
            msg = "the job did not process the warm-up events within 300 s"
            raise RuntimeError(msg)
        time.sleep(5.0)
        for i, (label, rate) in enumerate(rates):
            time.sleep(2.0)
            row = run_rate(v, work, audit, f"p{i}-{label}", rate, duration, users, run_dir, drain_timeout, meter)
            row["label"] = label
            rows.append(row)
            print(f"rate {label:>6} ({rate:>7.0f}/s): sent {row['sent_per_s']}/s, applied {row['achieved']}/s, "
                  f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, max {row['max_ms']} ms, "
                  f"rec p99 {row['rec_p99_ms']} ms, scored {row['users_scored_per_s']} users/s, "
                  f"drain {row['drain_s']} s", flush=True)
        profiled = None
        if profile_rate:
            time.sleep(2.0)
            profiled = run_rate(v, work, audit, "profile", profile_rate, 10.0, users, run_dir, drain_timeout, meter,
                                profile=meter.pids["job"])
    finally:
        launcher.stop(v, say=quiet)
        audit.close()
    return rows, profiled


# --------------------------------------------------------------------------------------------- main


def print_tables(result: dict[str, Any]) -> None:
    """The saturation and fixed-rate tables, and the profile's summary."""
    rows = result["runs"]
    if rows:
        print(f"\n{'variant':28} {'events':>8} {'seconds':>8} {'events/s':>9} {'job CPU %':>9} {'us/event':>9} "
              f"{'users w/ recs':>14}")
        for r in rows:
            print(f"{r['variant']:28} {r['events']:>8} {r['seconds']:>8} {r['events_per_s']:>9} {r['job_cpu_pct']:>9} "
                  f"{r['job_cpu_us_per_event']:>9} {r['users_with_recs']:>14}")
        sat = result["saturation"]
        print(f"saturation (thread): {sat['with_scoring']} events/s with scoring, {sat['without_scoring']} "
              f"without (without / with = {sat['scoring_overhead']})")
    if result["rates"]:
        head = (f"\n{'rate':>6} {'offered':>8} {'sent/s':>7} {'applied/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'max ms':>8} {'matched/sent':>15} {'lag@end':>8} {'max lag':>8} {'drain s':>8}")
        print(head)
        for r in result["rates"]:
            print(f"{r['label']:>6} {r['offered']:>8} {r['sent_per_s']!s:>7} {r['achieved']!s:>9} {r['p50_ms']!s:>8} "
                  f"{r['p99_ms']!s:>8} {r['max_ms']!s:>8} {r['matched']:>7}/{r['sent']:<7} {r['lag_at_end']:>8} "
                  f"{r['max_lag']:>8} {r['drain_s']!s:>8}")
        print(f"\n{'rate':>6} {'rec p50 ms':>10} {'rec p99 ms':>10} {'scored users/s':>14}")
        for r in result["rates"]:
            print(f"{r['label']:>6} {r['rec_p50_ms']!s:>10} {r['rec_p99_ms']!s:>10} {r['users_scored_per_s']!s:>14}")
        print("\nCPU microseconds per event sent, per process and per Flink task (thread) of the job:")
        for r in result["rates"]:
            per = {**r["cpu_us_per_event"], **{f"task: {k}": v for k, v in r["task_cpu_us_per_event"].items()}}
            print(f"{r['label']:>6} " + "; ".join(f"{k} {v}" for k, v in per.items() if k not in ("machine",)))
        names = ("job", "kafka", "redis", "producer", "bench", "others", "machine")
        print("\nCPU while sending, % of one core (2 cores = 200%):")
        print(f"{'rate':>6} " + " ".join(f"{n:>8}" for n in names))
        for r in result["rates"]:
            cpu = r["cpu_pct_while_sending"]
            print(f"{r['label']:>6} " + " ".join(f"{cpu.get(n, '')!s:>8}" for n in names))
    prof = result.get("profile")
    if prof:
        phase = prof["phase"]
        print(f"\nprofile: {phase['offered']} events/s offered, {phase['achieved']} applied; JVM CPU "
              f"{prof['jvm_cpu_pct_total']}% of a core; GIL held {prof['python_gil']['busy_fraction']:.0%} of the time")
        for t in prof["jvm_threads_busiest"][:8]:
            print(f"  {t['cpu_pct']:>6.1f}%  {t['name'][:100]}")
        print("  GIL holder, own frames:")
        for f in prof["python_gil"]["own_top"][:10]:
            print(f"  {f['share']:>6.1%}  {f['frame'][:100]}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the tables (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events of the saturation runs")
    p.add_argument("--modes", default="thread", help="saturation: Python execution modes ('' to skip)")
    p.add_argument("--rates", default="500,1000,2000,5000,10000,20000,sat",
                   help="offered events/s of the fixed-rate phases; 'sat' = the thread-scoring saturation ('' to skip)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds each fixed-rate phase sends")
    p.add_argument("--users", type=int, default=10_000, help="fresh users per fixed-rate phase")
    p.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for a phase to drain")
    p.add_argument("--profile", action="store_true",
                   help="one more fixed-rate phase at 2x saturation, sampled (per-thread CPU, jstack, py-spy)")
    return run_benchmark("stream", p, measure, argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark with parsed options; prints its tables and returns the result."""
    from jobs.producer import EventProducer
    from model_export.artifact.registry import Registry
    from model_export.data.datasets import load_dataset
    from model_export.pipeline import train_and_export_events
    from model_export.train import TrainConfig
    started = time.monotonic()
    base = load_config()
    run_dir = base.run_dir / "bench-stream"
    s = stack.isolated_settings(base, run_dir)
    s = s.model_copy(update={"flink": s.flink.model_copy(update={"checkpoint_interval_ms": 5000})})
    rows: list[dict[str, Any]] = []
    rate_rows: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    modes = [m for m in args.modes.split(",") if m]
    try:
        stack.up(s, say=quiet)
        data = load_dataset("ml-100k")
        events = data.events[: args.events]
        with EventProducer(s.kafka.bootstrap, s.kafka.events_topic) as prod:
            for item in data.items:  # the live catalog: category facets, recommendable items
                prod.send_item(item)
            for e in events:
                prod.send(e)
        want = Counter(e["user_id"] for e in events)
        artifact = train_and_export_events(events, run_dir / "artifacts", name="bench", config=TrainConfig(epochs=1))
        reg = Registry(run_dir / "models")
        reg.promote(reg.publish(artifact))
        for mode in modes:
            for scoring in (False, True):
                name = f"{mode}-{'scoring' if scoring else 'state-only'}"
                rows.append(run_variant(s, name, mode, scoring, want, run_dir, [i["item_id"] for i in data.items]))
                print(f"{name:28} {rows[-1]['events_per_s']:>8} events/s, job "
                      f"{rows[-1]['job_cpu_us_per_event']} us/event", flush=True)
        by = {r["variant"]: r["events_per_s"] for r in rows}
        rates: list[tuple[str, float]] = []
        for r in (x.strip() for x in args.rates.split(",") if x.strip()):
            if r == "sat":
                if by.get("thread-scoring"):
                    rates.append(("sat", float(by["thread-scoring"])))
            else:
                rates.append((r, float(r)))
        if rates or args.profile:
            profile_rate = 2.0 * (by.get("thread-scoring") or 2500) if args.profile else None
            rate_rows, profiled = run_rates(s, run_dir, Workload(data.events), rates, args.duration, args.users,
                                            args.drain_timeout, profile_rate)
            if profiled is not None:
                profile = profiled.pop("profile")
                profile["phase"] = {k: v for k, v in profiled.items() if k != "lag_timeline"}
    finally:
        stack.down(s, say=quiet)
    by = {r["variant"]: r["events_per_s"] for r in rows}
    with_s, without_s = by.get("thread-scoring"), by.get("thread-state-only")
    result: dict[str, Any] = {
        "rates": rate_rows,
        "saturation": {"with_scoring": with_s, "without_scoring": without_s,
                       "scoring_overhead": round(without_s / with_s, 2) if with_s and without_s else None},
        "events": args.events,
        "runs": rows,
        "fixed_rate_setup": {"duration_s": args.duration, "users_per_phase": args.users, "mode": "thread",
                             "scoring": True, "producer": PRODUCER_CONFIG,
                             "freshness": "written_at of the first audit record covering the event - its send time "
                                          "(user:{id}); rec_*: of the first recommendation write covering it"},
        "profile": profile,
        "wall_s": round(time.monotonic() - started),
    }
    print_tables(result)
    return result


if __name__ == "__main__":
    main()
