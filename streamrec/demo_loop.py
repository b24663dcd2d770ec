"""``streamrec demo --loop``: the feedback loop closed, unattended, on a MovieLens replay in time order.

On a private stack (free ports, under ``<run_dir>/demo-loop``):

1. the first ``--bootstrap`` share of the events (in time order) is replayed and the trainer bootstraps the
   first model from it (``streamrec trainer --once``);
2. the interest job starts and catches up with those events;
3. the long-running trainer starts (``streamrec trainer``: a run every ``trainer.min_new_events`` new events),
   and the rest of the data set is replayed at ``--rate`` events/s while the job serves and the trainer
   fine-tunes, gates and promotes; the job hot-swaps each promoted version; after the replay, the trainer's
   run in flight finishes before the trainer stops;
4. it prints, per segment of the replay, the model version in service and the online hit rate measured by
   the stream (``metrics:online``), then the trainer's decisions, the hit rate per version, and the first
   and the last model compared offline on the events after the last model's training data (neither model
   saw them).

Sizes for tests: ``--limit`` / ``STREAMREC_DEMO_LIMIT`` (events), ``STREAMREC_DEMO_EPOCHS`` (bootstrap epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.process import spawn, stop_pid, wait_for
from infra.stack import isolated_settings
from streamrec.config import CUTOFF, Settings, dump_config

SEGMENTS = 8
TRAINER_RUN_TIMEOUT_S = 900.0
# The online hit rate and the offline metrics this demo shows: at the cutoff of every figure we report.
HITS, RECALL, NDCG = f"hits@{CUTOFF}", f"recall@{CUTOFF}", f"ndcg@{CUTOFF}"


def _say(text: str) -> None:
    print(text, flush=True)


def _totals(online: dict[str, dict[str, dict[str, float]]]) -> dict[str, tuple[int, int]]:
    """Model version -> (actions, hits@10) over every scenario."""
    return {v: (int(s["all"].get("actions", 0)), int(s["all"].get(HITS, 0))) for v, s in online.items()}


def run_loop_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the loop demo; returns the exit code (1 if the loop's model does not beat the first one)."""
    from infra import stack
    from jobs import launcher
    from model_export.data.datasets import load_dataset
    from serving.store import connect, read_online_metrics, wait_for_events
    from streamrec.publish import registry as registry_of

    limit = args.limit or int(os.environ.get("STREAMREC_DEMO_LIMIT", "0")) or None
    data = load_dataset(args.dataset)
    events = data.events[:limit] if limit else data.events
    n_boot = int(len(events) * args.bootstrap)
    boot, rest = events[:n_boot], events[n_boot:]
    s, per_run = _loop_settings(settings, len(rest))
    config_path = dump_config(s, s.run_dir / "config.yaml")
    cli = [sys.executable, "-m", "streamrec.cli", "--config", str(config_path)]
    registry = registry_of(s)
    trainer_log = s.run_dir / "trainer.log"
    trainer_pid = None
    try:
        _say(f"\n== 1/4 stack, catalog, and the first {len(boot)} events ({args.bootstrap:.0%} of {len(events)})")
        stack.up(s)
        r = connect(s.redis.url)
        first = _bootstrap(s, cli, registry, trainer_log, data.items, boot)
        if first is None:
            return 1

        _say("\n== 2/4 the interest job catches up with the bootstrap events")
        want: Counter[str] = Counter(e["user_id"] for e in boot)
        launcher.start(s, str(config_path), say=_say, resume=False)
        took = wait_for_events(r, want)
        _say(f"applied {len(boot)} events in {took:.0f}s")
        # The bootstrap events were the first model's training data: its hits there do not count.
        before = _totals(read_online_metrics(r))

        _say(f"\n== 3/4 replay the other {len(rest)} events at {args.rate}/s; the trainer runs every {per_run} events")
        trainer_pid = spawn([*cli, "trainer"], trainer_log)
        _replay(s, r, rest, want, before, args.rate, n_boot)
        wait_for_events(r, want)
        # A run the replay triggered may still be training: let it decide before the trainer stops
        # (after two checks of the topic's end, so that a run the last events made due has started).
        time.sleep(2 * s.trainer.check_interval_s + 1)
        took = wait_for(
            "the trainer's last run", lambda: _trainer_idle(trainer_log, registry), TRAINER_RUN_TIMEOUT_S, 1.0
        )
        stop_pid(trainer_pid)
        trainer_pid = None
        _say(f"replay applied; the trainer's last run decided {took:.0f}s later")

        _say("\n== 4/4 what the loop did")
        _print_decisions(registry)
        _print_online(read_online_metrics(r), before)
        return _compare_offline(registry, first, events)
    finally:
        stop_pid(trainer_pid)
        launcher.stop(s, say=lambda *_: None)
        if getattr(args, "keep", False):
            _say(f"stack left running: streamrec --config {config_path} down")
        else:
            stack.down(s, say=lambda *_: None)


def _loop_settings(settings: Settings, replayed: int) -> tuple[Settings, int]:
    """The demo's private stack, a trainer run due every ``1/SEGMENTS``-ish of the replay; and that run size."""
    epochs = int(os.environ.get("STREAMREC_DEMO_EPOCHS", "0")) or settings.trainer.epochs
    base = isolated_settings(settings, settings.run_dir / "demo-loop")
    # Gated on what came in since the last run.
    per_run = max(replayed // SEGMENTS, settings.trainer.min_holdout_events + 2)
    s = base.model_copy(
        update={
            "trainer": base.trainer.model_copy(
                update={"min_new_events": per_run, "epochs": epochs, "check_interval_s": 1.0}
            ),
            "job": base.job.model_copy(update={"model_check_interval_s": 1.0}),
        }
    )
    return s, per_run


def _bootstrap(
    s: Settings,
    cli: list[str],
    registry: Any,
    trainer_log: Path,
    items: Sequence[Mapping[str, Any]],
    boot: Sequence[Mapping[str, Any]],
) -> str | None:
    """Send the catalog and the bootstrap events, and let ``trainer --once`` promote the first model (its version)."""
    from jobs.producer import EventProducer

    k = s.kafka
    with EventProducer(k.bootstrap, k.events_topic, k.items_topic) as p:
        for item in items:
            p.send_item(item)
        for e in boot:
            p.send(e)
    t0 = time.monotonic()
    with open(trainer_log, "ab") as out:
        subprocess.run([*cli, "trainer", "--once"], stdout=out, stderr=subprocess.STDOUT, check=False)
    first: str | None = registry.current()
    if first is None:
        _say(f"the bootstrap run promoted nothing; see {trainer_log}")
        return None
    _say(f"trainer bootstrapped {first} in {time.monotonic() - t0:.0f}s (log {trainer_log})")
    return first


def _replay(
    s: Settings,
    r: Any,
    rest: Sequence[Mapping[str, Any]],
    want: Counter[str],
    before: dict[str, tuple[int, int]],
    rate: float,
    n_boot: int,
) -> None:
    """Send ``rest`` at ``rate`` events/s (counting them into ``want``), printing each segment's online hit rate."""
    from jobs.producer import EventProducer
    from serving.store import MODEL_CURRENT, read_online_metrics

    _say(f"{'sent':>8} {'serving':>8} {f'hit@{CUTOFF} in segment':>18}  {'actions':>8}")
    seg = max(len(rest) // SEGMENTS, 1)
    last = before
    gap = 1.0 / rate
    with EventProducer(s.kafka.bootstrap, s.kafka.events_topic) as p:
        start = time.monotonic()
        for n, e in enumerate(rest, start=1):
            p.send(e)
            want[e["user_id"]] += 1
            ahead = start + n * gap - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if n % seg == 0 or n == len(rest):
                now = _totals(read_online_metrics(r))
                acts = sum(now.get(v, (0, 0))[0] - last.get(v, (0, 0))[0] for v in now)
                hits = sum(now.get(v, (0, 0))[1] - last.get(v, (0, 0))[1] for v in now)
                serving = (r.get(MODEL_CURRENT) or b"-").decode()
                shown = f"{hits / acts:.4f}" if acts else "-"
                _say(f"{n_boot + n:>8} {serving:>8} {shown:>18}  {acts:>8}")
                last = now


def _print_decisions(registry: Any) -> None:
    _say(f"{'run':>4} {'decision':>9} {'candidate':>9} {'serving':>8} {'gate':>28} {'seconds':>8}")
    for n, line in enumerate(_decisions(registry), start=1):
        c, sv = line.get("candidate_metrics") or {}, line.get("serving_metrics") or {}
        metric = line.get("metric", NDCG)
        gate = f"{metric} {c.get(metric, float('nan')):.4f} vs {sv.get(metric, float('nan')):.4f}"
        _say(
            f"{n:>4} {line['decision']:>9} {line.get('candidate') or '-':>9} {line.get('serving') or '-':>8} "
            f"{gate:>28} {line.get('seconds', 0):>8.1f}"
        )


def _print_online(online: dict[str, dict[str, dict[str, float]]], before: dict[str, tuple[int, int]]) -> None:
    _say("\nonline hit rate per model version (replay after the bootstrap):")
    _say(f"  {'version':>8} {'actions':>8} {f'hit@{CUTOFF}':>8}")
    for version, (acts, hits) in sorted(_totals(online).items()):
        acts -= before.get(version, (0, 0))[0]
        hits -= before.get(version, (0, 0))[1]
        if acts > 0:
            _say(f"  {version:>8} {acts:>8} {hits / acts:>8.4f}")


def _compare_offline(registry: Any, first: str, events: Sequence[Mapping[str, Any]]) -> int:
    """The first and the last model on the events after the last one's training data: 0 if the last wins."""
    from model_export.data.splits import window_split
    from model_export.evaluation.metrics import artifact_ranker, evaluate

    final = registry.current()
    assert final is not None
    if final == first:
        _say(f"\nno candidate was promoted: {first} still serves")
        return 1
    contract = json.loads((registry.path(final) / "contract.json").read_text())
    cutoff = int(contract["train_data"]["max_ts"]) + 1
    split = window_split(events, cutoff)
    _say(
        f"\noffline, on the events after {final}'s training data (neither model trained on them; "
        "full ranking over all items, seen items excluded):"
    )
    scores = {}
    for version in (first, final):
        rank, items = artifact_ranker(registry.path(version))
        m = evaluate(rank, split, items, CUTOFF)
        scores[version] = m
        _say(f"  {version:>8}  {RECALL} {m[RECALL]:.4f}  {NDCG} {m[NDCG]:.4f}  mrr {m['mrr']:.4f}")
    better = scores[final][NDCG] > scores[first][NDCG]
    _say(
        f"the loop's model {final} {'beats' if better else 'does NOT beat'} the first model {first} "
        f"on the later part of the stream"
    )
    return 0 if better else 1


def _decisions(registry: Any) -> list[dict[str, Any]]:
    from model_export.trainer import DECISION_LOG

    path = registry.root / DECISION_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _trainer_idle(trainer_log: Any, registry: Any) -> bool:
    """True when every run the long-running trainer started has logged its decision.

    The long-running trainer prints ``trainer: run N`` as a run starts; each run appends one line to
    ``trainer.jsonl`` (the first line there is the bootstrap run of ``trainer --once``).
    """
    lines = trainer_log.read_text(errors="replace").splitlines()
    started = sum(1 for line in lines if line.startswith("trainer: run "))
    return len(_decisions(registry)) - 1 >= started


__all__ = ["run_loop_demo"]
