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
   the stream (``metrics:online``), then the trainer's decisions and the hit rate per version; then it
   trains one more model offline, from scratch, on exactly the last model's training events (no stream,
   no trainer, no warm start; the trainer's bootstrap config) and compares three models on the events
   after the last model's training data (none of them saw those):

   - ``first``: the bootstrap model, trained on the first ``--bootstrap`` share;
   - ``loop``: the last model, fine-tuned by the trainer from its parents while the stream ran;
   - ``same-data``: the same training events as ``loop``, trained offline without the loop.

   ``loop`` against ``first`` is more data and the loop together; ``loop`` against ``same-data`` is the gain
   of the loop itself, whatever its sign (the loop's model has also had more epochs in all: its ancestors').

Exit status: 0 if the loop's last model beats the first on the trainer's gate metric (``trainer.gate_metric``,
NDCG@10) on those events; 1 if it does not, if no candidate was promoted, or if the bootstrap failed. The
loop-against-same-data comparison is reported, never gated.

Sizes for tests: ``--limit`` / ``STREAMREC_DEMO_LIMIT`` (events), ``STREAMREC_DEMO_EPOCHS`` (the trainer's
from-scratch epochs: the bootstrap's and the same-data model's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
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
    """Run the loop demo; returns the exit code (1 if the loop's last model does not beat the first one)."""
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
        # The replay starts once the trainer watches the topic: on a loaded machine its start-up (torch) can
        # outlast the replay, and a trainer that has not started a run would look idle at the end.
        wait_for("the trainer to start", lambda: _trainer_watching(trainer_log), TRAINER_RUN_TIMEOUT_S, 0.5)
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
        return _compare_offline(s, registry, first, data.items, events)
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


def _compare_offline(
    s: Settings,
    registry: Any,
    first: str,
    items: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> int:
    """Three models on the events after the last one's training data; 0 if the loop's last model beats the first.

    The rows: ``first`` (the bootstrap model), ``loop`` (the model in service at the end, fine-tuned from its
    parents by the trainer while the stream ran) and ``same-data`` (trained here, from scratch, on exactly the
    ``loop`` model's training events with the trainer's bootstrap config: no stream, no trainer, no warm
    start). ``loop`` against ``first`` is more data and the loop together; ``loop`` against ``same-data`` is
    the loop itself. Only the first is the exit rule (on the trainer's gate metric); the second is reported.
    """
    from model_export.artifact.contract import load_contract
    from model_export.data.splits import window_split
    from model_export.pipeline import describe_training_data

    final = registry.current()
    assert final is not None
    if final == first:
        _say(f"\nno candidate was promoted: {first} still serves")
        return 1
    train_data = load_contract(registry.path(final)).train_data
    cutoff = int(train_data["max_ts"]) + 1
    # Its cases are the events neither model trained on; its training data is the last model's.
    split = window_split(events, cutoff)
    ours = describe_training_data(split, str(train_data.get("source")))
    differs = {k: (ours[k], train_data.get(k)) for k in ("min_ts", "max_ts", "events", "users")}
    differs = {k: v for k, v in differs.items() if v[0] != v[1]}
    _say(f"\ntraining the same-data model: {final}'s {ours['events']:,} training events, from scratch, no loop")
    scores = _three_rows(s, registry, first, final, split, items, sum(int(e["ts"]) >= cutoff for e in events))
    if differs:
        _say(f"  (the same-data model's training data differs from {final}'s contract, ours vs its: {differs})")
    _say(f"more data and the loop together ({final} vs {first}): {_delta(scores['loop'], scores['first'])}")
    _say(
        f"the loop itself ({final} vs the same-data model, the same training events): "
        f"{_delta(scores['loop'], scores['same-data'])} (reported, not gated)"
    )
    metric = s.trainer.gate_metric
    better = scores["loop"][metric] > scores["first"][metric]
    _say(
        f"the loop's model {final} {'beats' if better else 'does NOT beat'} the first model {first} "
        f"on the later part of the stream ({metric}, the trainer's gate metric)"
    )
    return 0 if better else 1


def _three_rows(
    s: Settings,
    registry: Any,
    first: str,
    final: str,
    split: Any,
    items: Sequence[Mapping[str, Any]],
    held: int,
) -> dict[str, dict[str, float]]:
    """Train the same-data model, print the rows ``first``, ``loop``, ``same-data``; their metrics by row name.

    All three are measured alike: through their exported ONNX artifacts on ``split``'s cases.
    """
    from model_export.artifact.contract import load_contract
    from model_export.evaluation.metrics import artifact_ranker, evaluate

    chain = _lineage(registry, final)
    boot, last = (load_contract(registry.path(v)).train_data for v in (first, final))
    # Passes over data the loop's model went through, its ancestors' included: more than the same-data model's.
    passes = [int(load_contract(registry.path(v)).hyper_parameters.get("epochs_run", 0)) for v in reversed(chain)]
    tunes = len(chain) - 1
    scores: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="offline-", dir=s.run_dir) as tmp:
        same_data, epochs = _train_same_data(s, registry, first, split, items, Path(tmp) / "model")
        rows = [
            ("first", first, registry.path(first), f"{boot['events']:,} events: the bootstrap (trainer --once)"),
            (
                "loop",
                final,
                registry.path(final),
                f"{last['events']:,} events: the loop's last model, fine-tuned {tunes} time{'s' * (tunes != 1)} "
                f"({' <- '.join(chain)}) by the trainer while the stream ran; epochs {'+'.join(map(str, passes))}",
            ),
            (
                "same-data",
                "-",
                same_data,
                f"{sum(map(len, split.train.values())):,} events: the same as {final}'s, trained here from scratch "
                f"without the loop (no stream, no trainer, no warm start; {first}'s training config, {epochs} epochs)",
            ),
        ]
        _say(
            f"\noffline, on the {held:,} events after {final}'s training data (none of the three trained on them; "
            "full ranking over all items, seen items excluded):"
        )
        _say(f"  {'model':<9} {'version':>7} {RECALL:>9} {NDCG:>8} {'mrr':>7}  trained on")
        for name, version, path, what in rows:
            rank, index = artifact_ranker(path)
            m = scores[name] = evaluate(rank, split, index, CUTOFF)
            _say(f"  {name:<9} {version:>7} {m[RECALL]:>9.4f} {m[NDCG]:>8.4f} {m['mrr']:>7.4f}  {what}")
    return scores


def _delta(a: Mapping[str, float], b: Mapping[str, float]) -> str:
    """``a - b`` in NDCG@10 and Recall@10, absolute and relative."""
    parts = []
    for name in (NDCG, RECALL):
        d = a[name] - b[name]
        rel = f" ({d / b[name]:+.0%})" if b[name] > 0 else ""
        parts.append(f"{name} {d:+.4f}{rel}")
    return ", ".join(parts)


def _lineage(registry: Any, version: str) -> list[str]:
    """``version`` and its parents, newest first (the versions it was fine-tuned from)."""
    from model_export.artifact.contract import load_contract

    chain = [version]
    while (parent := load_contract(registry.path(chain[-1])).parent) is not None and parent not in chain:
        chain.append(parent)
    return chain


def _train_same_data(
    s: Settings, registry: Any, first: str, split: Any, items: Sequence[Mapping[str, Any]], out: Path
) -> tuple[Path, int]:
    """Train and export a model on ``split.train`` from scratch, as the trainer's bootstrap trained ``first``.

    The config is the one ``first``'s contract records (the trainer's bootstrap: ``trainer.epochs``,
    ``max_train_seconds``, ``cold_exposure``, its seed), the catalog the demo sent (as the trainer read it).

    Returns:
        The artifact exported to ``out`` and the epochs run.
    """
    from model_export.artifact.contract import load_contract
    from model_export.artifact.export import export_artifact
    from model_export.model import ModelConfig
    from model_export.pipeline import describe_training_data
    from model_export.train import TrainConfig, train_split
    from streamrec.events import validate_item

    hyper = load_contract(registry.path(first)).hyper_parameters
    names = {f.name for f in fields(TrainConfig)} - {"model"}
    config = TrainConfig(model=ModelConfig(**hyper["model"]), **{k: v for k, v in hyper.items() if k in names})
    catalog = {it.item_id: it.to_dict() for it in (validate_item(dict(r)) for r in items)}
    trained = train_split(split, config, int(hyper.get("seed", s.trainer.seed)), catalog=catalog)
    export_artifact(
        trained.model,
        trained.items,
        out,
        version="offline-same-data",
        metrics={},
        train_data=describe_training_data(split, "offline"),
        hyper_parameters={"seed": trained.seed, **asdict(trained.config), "epochs_run": trained.epochs_run},
        scenarios=trained.scenarios,
    )
    return out, trained.epochs_run


def _decisions(registry: Any) -> list[dict[str, Any]]:
    from model_export.trainer import DECISION_LOG

    path = registry.root / DECISION_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _trainer_watching(trainer_log: Any) -> bool:
    """True once the long-running trainer has logged that it watches the events topic."""
    try:
        text = trainer_log.read_text(errors="replace")
    except OSError:
        return False
    return "trainer: running every" in text


def _trainer_idle(trainer_log: Any, registry: Any) -> bool:
    """True when every run the long-running trainer started has logged its decision.

    The long-running trainer prints ``trainer: run N`` as a run starts; each run appends one line to
    ``trainer.jsonl`` (the first line there is the bootstrap run of ``trainer --once``).
    """
    lines = trainer_log.read_text(errors="replace").splitlines()
    started = sum(1 for line in lines if line.startswith("trainer: run "))
    return len(_decisions(registry)) - 1 >= started


__all__ = ["run_loop_demo"]
