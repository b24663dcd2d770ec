"""The periodic trainer: fine-tune the serving model on new events, gate it against the serving one, register, promote.

Run it (the settings' ``trainer`` section, see ``config.example.yaml``)::

    streamrec trainer          # long-running: a run every trainer.interval_s, or once trainer.min_new_events arrived
    streamrec trainer --once   # one run, for cron or a Kubernetes CronJob

One run (:func:`run_once`):

1. Read the events log and the catalog (the ``items`` topic) back from Kafka.
2. The serving version is ``Registry.current()``; events newer than its ``train_data.max_ts`` are
   new. Fewer than ``min_new_events``: skip.
3. Hold out the newest ``holdout_fraction`` of the new events (at least ``min_holdout_events``):
   taken from the new events only, so that neither model has trained on it.
4. Candidate: the serving model's weights fine-tuned for ``fine_tune_epochs`` on every event before
   the window; items first seen since get rows from their text (:mod:`model_export.cold_start`).
   With no serving version (bootstrap), or one without weights, a model trained from scratch for
   ``epochs``.
5. Export it (parity checked), measure candidate and serving model on the window through their ONNX
   artifacts (full ranking, seen items excluded; a target a model does not know is a miss), and
   register the candidate with both metrics and its parent.
6. Promote it only if ``candidate[gate_metric] >= serving[gate_metric] + gate_min_delta``.
7. Log the decision: one line on stdout and one JSON line in ``<registry>/trainer.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from model_export.artifact.contract import load_contract, write_contract
from model_export.artifact.export import export_artifact, load_model
from model_export.artifact.registry import Registry
from model_export.cold_start import TextEncode, grow_item_table
from model_export.data.event_log import EventLog
from model_export.data.splits import Split, window_split
from model_export.errors import NotEnoughDataError
from model_export.evaluation.baselines import popularity_ranker
from model_export.evaluation.metrics import artifact_ranker, evaluate
from model_export.pipeline import describe_training_data
from model_export.text_embedding import encode_texts
from model_export.train import TrainConfig, TrainedModel, train_split
from streamrec.config import CUTOFF, TrainerConfig
from streamrec.events import item_text

logger = logging.getLogger(__name__)

DECISION_LOG = "trainer.jsonl"
# Float slack of the gate: 0.12 >= 0.10 + 0.02 must hold although 0.10 + 0.02 is 0.12000000000000001.
_EPS = 1e-9

Decision = Literal["promoted", "refused", "skipped"]
# Called after a promotion with the new version and the events of the run (e.g. to refresh the
# popular fallback with them, as `streamrec train --promote` does).
PromoteHook = Callable[[str, Sequence[Mapping[str, Any]]], None]


@dataclass(frozen=True)
class TrainerResult:
    """What one run decided, and on what evidence (also the JSON line of ``trainer.jsonl``).

    Attributes:
        ts: When it was decided, epoch ms.
        decision: ``promoted``, ``refused`` (registered, not promoted) or ``skipped`` (nothing trained).
        reason: Why, in words (the gate's comparison, or what was missing).
        candidate: The registered candidate version, or None when skipped.
        serving: The version in service when the run started (None before the first promotion).
        metric: The gate metric.
        candidate_metrics: Candidate on the window: ``recall@10``, ``ndcg@10``, ``mrr``, ``cases``, ``users``.
        serving_metrics: The serving model on the same window (None without one).
        window: The held-out window: ``cutoff_ts``, ``min_ts``, ``max_ts``, ``events``, ``cases``, ``users``.
        init: Where the candidate's weights started: ``{"from": <parent version>, "copied", "from_text",
            "mean", "fit_items"}`` for a warm start, ``{"from": None, "reason": ...}`` from scratch.
        new_events: Events newer than the serving model's training data.
        seconds: Wall time of the run.
    """

    ts: int
    decision: Decision
    reason: str
    candidate: str | None
    serving: str | None
    metric: str
    candidate_metrics: dict[str, float] | None = None
    serving_metrics: dict[str, float] | None = None
    window: dict[str, Any] | None = None
    init: dict[str, Any] | None = None
    new_events: int = 0
    seconds: float = 0.0

    @property
    def warm_start(self) -> bool:
        """True when the candidate was fine-tuned from its parent's weights."""
        return bool(self.init and self.init.get("from"))

    def to_json(self) -> str:
        """One line of ``trainer.jsonl``."""
        return json.dumps(asdict(self), separators=(",", ":"))


def gate(
    candidate: Mapping[str, float], serving: Mapping[str, float] | None, metric: str, min_delta: float
) -> tuple[bool, str]:
    """The promotion rule: ``candidate[metric] >= serving[metric] + min_delta``.

    Args:
        candidate: The candidate's metrics on the window.
        serving: The serving model's on the same window; None when nothing serves (promote).
        metric: ``recall@10``, ``ndcg@10`` or ``mrr``.
        min_delta: Required gain; negative tolerates a loss.

    Returns:
        Whether to promote, and the comparison in words.
    """
    if serving is None:
        return True, "no serving version to compare with (bootstrap)"
    c, s = float(candidate[metric]), float(serving[metric])
    if c - s >= min_delta - _EPS:
        return True, f"{metric} {c:.4f} >= serving {s:.4f} + min_delta {min_delta:g}"
    return False, f"{metric} {c:.4f} < serving {s:.4f} + min_delta {min_delta:g}"


def holdout_cutoff(new_ts: Sequence[int], fraction: float, min_events: int) -> int:
    """Event time from which the new events are held out.

    The window is the newest ``max(ceil(fraction * n), min_events)`` of the ``n`` new events, and
    leaves at least one new event to train on; events sharing the cutoff time are all held out.

    Args:
        new_ts: Times (epoch ms) of the new events, any order, at least two.
        fraction: Share of the new events to hold out.
        min_events: Fewest events to hold out.

    Returns:
        The cutoff time: events with ``ts >= cutoff`` are the window.
    """
    n = len(new_ts)
    if n < 2:
        msg = f"holdout_cutoff needs at least 2 new events, got {n}"
        raise ValueError(msg)
    k = min(max(math.ceil(fraction * n), min_events), n - 1)
    return sorted(new_ts)[n - k]


def run_once(
    log: EventLog,
    registry: Registry,
    config: TrainerConfig,
    *,
    train_config: TrainConfig | None = None,
    on_promote: PromoteHook | None = None,
    encode: TextEncode | None = None,
    work_dir: Path | None = None,
    source: str = "events",
) -> TrainerResult:
    """One run of the trainer (see the module docstring): skip, or train, register and gate a candidate.

    Args:
        log: Where the events and the catalog come from (:class:`~model_export.data.event_log.KafkaEventLog`).
        registry: The model registry; the decision is appended to ``<root>/trainer.jsonl``.
        config: The trainer settings.
        train_config: Batch size, learning rate, device and the model shape of a bootstrap (a fine-tune
            keeps its parent's shape); its epochs and max_seconds come from ``config``.
        on_promote: Called with the promoted version and the run's events after a promotion (and its
            decision line); an error in it is printed, and the promotion stands.
        encode: The text encoder for new items (default: all-MiniLM-L6-v2, loaded on first use).
        work_dir: Where the candidate is exported before it is registered (a temporary folder in it).
        source: Name of the event source, recorded in the contract's ``train_data``.

    Returns:
        The decision and its evidence.

    Raises:
        model_export.errors.ModelExportError: the serving artifact is corrupt, export parity failed, ...
            A failed run is logged as a ``"failed"`` line in ``trainer.jsonl`` before the error goes on
            (:func:`run_forever` then retries).
    """
    try:
        return _run(log, registry, config, train_config, on_promote, encode, work_dir, source)
    except Exception as exc:
        _failed(registry, config, exc)
        raise


def _run(
    log: EventLog,
    registry: Registry,
    config: TrainerConfig,
    train_config: TrainConfig | None,
    on_promote: PromoteHook | None,
    encode: TextEncode | None,
    work_dir: Path | None,
    source: str,
) -> TrainerResult:
    t0 = time.perf_counter()
    metric = config.gate_metric
    serving = registry.current()
    max_ts = int(load_contract(registry.path(serving)).train_data["max_ts"]) if serving else None
    events = log.events()
    new_ts = [int(e["ts"]) for e in events if max_ts is None or int(e["ts"]) > max_ts]

    def done(decision: Decision, reason: str, **evidence: Any) -> TrainerResult:
        result = TrainerResult(
            ts=int(time.time() * 1000),
            decision=decision,
            reason=reason,
            candidate=evidence.pop("candidate", None),
            serving=serving,
            metric=metric,
            new_events=len(new_ts),
            seconds=round(time.perf_counter() - t0, 2),
            **evidence,
        )
        _record(registry, result)
        return result

    if len(new_ts) < config.min_new_events:
        since = f"newer than {serving}'s training data (ts > {max_ts})" if serving else "in the log"
        return done("skipped", f"{len(new_ts)} events {since} < min_new_events={config.min_new_events}")
    cutoff = holdout_cutoff(new_ts, config.holdout_fraction, config.min_holdout_events)
    try:
        split = window_split(events, cutoff)
    except NotEnoughDataError as exc:
        return done("skipped", f"no usable held-out window from ts {cutoff}: {exc}")
    window = _window(split, events)
    logger.info(
        f"trainer: {len(new_ts)} new events; training on {sum(map(len, split.train.values()))} events "
        f"before ts {cutoff}, holding out {window['events']} ({window['cases']} test cases)",
    )

    base = train_config or TrainConfig()
    base = replace(base, max_seconds=config.max_train_seconds, k=CUTOFF, cold_exposure=config.cold_exposure)
    trained, init = _candidate(log, registry, serving, split, base, config, encode)

    candidate, cand_metrics, serv_metrics = _register_candidate(
        trained, init, split, window, registry, serving, config, source, work_dir
    )
    promote, comparison = gate(cand_metrics, serv_metrics, metric, config.gate_min_delta)
    evidence = {
        "candidate": candidate,
        "candidate_metrics": cand_metrics,
        "serving_metrics": serv_metrics,
        "window": window,
        "init": init,
    }
    if not promote:
        return done("refused", f"{comparison}; {serving} stays in service", **evidence)
    registry.promote(candidate)
    result = done("promoted", comparison, **evidence)
    if on_promote is not None:
        try:
            on_promote(candidate, events)
        except Exception as exc:  # noqa: BLE001 - the promotion stands; only its announcement failed
            logger.warning(f"trainer: {candidate} is promoted, but the on_promote hook failed: {exc}")
    return result


def _register_candidate(
    trained: TrainedModel,
    init: dict[str, Any],
    split: Split,
    window: dict[str, Any],
    registry: Registry,
    serving: str | None,
    config: TrainerConfig,
    source: str,
    work_dir: Path | None,
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Export the candidate, measure it and the serving model on the held-out window, register it.

    Both models are measured through their exported ONNX graphs, as the stream would score them, and the
    window's metrics go into the candidate's contract before it enters the registry.

    Returns:
        The candidate's version, its metrics and the serving model's (None without a serving model).
    """
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="trainer-") as tmp:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        train_data = {**describe_training_data(split, source), "holdout": window}
        hyper = {
            "seed": config.seed,
            **asdict(trained.config),
            "epochs_run": trained.epochs_run,
            "final_loss": trained.final_loss,
            "init": init,
            "trainer": config.model_dump(),
        }
        staged = export_artifact(
            trained.model,
            trained.items,
            Path(tmp) / "candidate",
            version=f"trainer-{stamp}",
            metrics={},
            train_data=train_data,
            parent=serving,
            hyper_parameters=hyper,
            scenarios=trained.scenarios,
        )
        rank, items = artifact_ranker(staged)
        cand_metrics = evaluate(rank, split, items, CUTOFF)
        serv_metrics = None
        if serving is not None:
            rank, items = artifact_ranker(registry.path(serving))
            serv_metrics = evaluate(rank, split, items, CUTOFF)
        popularity = evaluate(popularity_ranker(split.train, trained.items), split, trained.items, CUTOFF)
        metrics = {"window": {"candidate": cand_metrics, "serving": serv_metrics, "popularity": popularity}}
        write_contract(staged, replace(load_contract(staged), metrics=metrics))
        candidate = registry.publish(staged)

    return candidate, cand_metrics, serv_metrics


def _window(split: Split, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    assert split.cutoff_ts is not None
    held = [int(e["ts"]) for e in events if int(e["ts"]) >= split.cutoff_ts]
    return {
        "cutoff_ts": split.cutoff_ts,
        "min_ts": min(held),
        "max_ts": max(held),
        "events": len(held),
        "cases": len(split.cases),
        "users": len({u for u, _ in split.cases}),
    }


def _candidate(
    log: EventLog,
    registry: Registry,
    serving: str | None,
    split: Split,
    base: TrainConfig,
    config: TrainerConfig,
    encode: TextEncode | None,
) -> tuple[TrainedModel, dict[str, Any]]:
    """Fine-tune the serving model (grown by the new items) or, failing that, train one from scratch."""
    parent = load_model(registry.path(serving)) if serving else None
    if parent is None:
        why = "no serving version (bootstrap)" if serving is None else f"{serving} has no weights.pt"
        if serving is not None:
            logger.info(
                f"trainer: {serving} carries no weights (exported before artifacts kept them): training from "
                f"scratch for {config.epochs} epochs",
            )
        cfg = replace(base, epochs=config.epochs)
        trained = train_split(split, cfg, config.seed, catalog=log.items(), encode=encode)
        return trained, {"from": None, "reason": why}
    counts = Counter(item for seq in split.train.values() for item in seq)
    known = set(parent.items)
    new_items = sorted(item for item in counts if item not in known)
    texts: dict[str, str] = {}
    if new_items:  # the catalog is read, and the encoder loaded, only when some item needs a row
        texts = {item_id: item_text(rec) for item_id, rec in log.items().items()}
    grown, items, stats = grow_item_table(
        parent.model, parent.items, new_items, texts, counts, encode or encode_texts
    )
    logger.info(
        f"trainer: fine-tuning {serving} for {config.fine_tune_epochs} epochs; {len(new_items)} new items "
        f"({stats.from_text} rows from text, {stats.mean} mean rows)",
    )
    cfg = replace(base, epochs=config.fine_tune_epochs)
    trained = train_split(split, cfg, config.seed, init=(grown, items), scenario_names=parent.scenarios)
    return trained, {"from": serving, **asdict(stats)}


def _record(registry: Registry, result: TrainerResult) -> None:
    """Print the decision in one line and append it to the registry's decision log."""
    line = f"trainer: {result.decision}"
    if result.candidate:
        line += f" {result.candidate} (parent {result.serving})" if result.serving else f" {result.candidate}"
    if result.window and result.candidate:
        line += f" on {result.window['cases']} held-out cases"
    logger.info(f"{line}: {result.reason}")
    _append(registry.root / DECISION_LOG, result.to_json())


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


@dataclass
class Schedule:
    """When the long-running trainer runs: every ``interval_s``, or once ``min_new_events`` records arrived.

    A failed run is retried after a back-off that doubles from ``retry_s`` up to ``interval_s``.
    """

    interval_s: float
    min_new_events: int
    retry_s: float
    last_run: float | None = None
    last_end: int | None = None
    failures: int = 0
    _retry_at: float | None = field(default=None, repr=False)

    def due(self, now: float, end: int | None) -> str | None:
        """Why a run is due at monotonic time ``now`` with ``end`` records on the topic, or None."""
        if self.last_run is None:
            return "first run"
        if self._retry_at is not None:
            return f"retry {self.failures} after a failed run" if now >= self._retry_at else None
        if now - self.last_run >= self.interval_s:
            return f"{self.interval_s:g} s since the last run"
        if end is not None and self.last_end is not None and end - self.last_end >= self.min_new_events:
            return f"{end - self.last_end} new records on the events topic"
        return None

    def ran(self, now: float, end: int | None, ok: bool) -> None:
        """Note a run that started at ``now`` with ``end`` records on the topic."""
        self.last_run = now
        self.last_end = end if end is not None else self.last_end
        self.failures = 0 if ok else self.failures + 1
        backoff = min(self.retry_s * 2 ** (self.failures - 1), self.interval_s)
        self._retry_at = None if ok else now + backoff


class TrainerStopped(BaseException):  # noqa: N818 - a stop request, like KeyboardInterrupt, not an error
    """Raised in the trainer's main thread by SIGTERM: abort the current step and stop."""


def run_forever(
    log: EventLog,
    registry: Registry,
    config: TrainerConfig,
    *,
    stop: threading.Event | None = None,
    **run_options: Any,
) -> int:
    """Run :func:`run_once` whenever it is due (:class:`Schedule`) until stopped.

    The topic's end offsets are read every ``config.check_interval_s``. A failed run is logged
    (stdout and a ``"failed"`` line in ``trainer.jsonl``) and retried with back-off; it never ends
    the loop. SIGTERM (in the main thread) and Ctrl-C stop it at once: every registry write is
    atomic, so an interrupted run leaves no half version behind.

    Args:
        log: The event log (closed on return).
        registry: The model registry.
        config: The trainer settings.
        stop: Set it to stop the loop (from another thread); a fresh one by default.
        **run_options: Passed to :func:`run_once` (``on_promote``, ``train_config``, ...).

    Returns:
        The number of runs started.
    """
    stop = stop or threading.Event()
    schedule = Schedule(config.interval_s, config.min_new_events, retry_s=config.check_interval_s)
    restore = _stop_on_sigterm()
    runs = 0
    logger.info(
        f"trainer: running every {config.interval_s:g} s or every {config.min_new_events} new records "
        f"(checked every {config.check_interval_s:g} s); Ctrl-C or SIGTERM stops",
    )
    try:
        while not stop.is_set():
            end = _end(log)
            now = time.monotonic()
            why = schedule.due(now, end)
            if why is not None:
                runs += 1
                logger.info(f"trainer: run {runs} ({why})")
                ok = True
                try:
                    run_once(log, registry, config, **run_options)
                except Exception:  # noqa: BLE001 - run_once logged it; a failed run is retried, never fatal
                    ok = False
                    traceback.print_exc()
                schedule.ran(now, end, ok)
            stop.wait(config.check_interval_s)
    except (KeyboardInterrupt, TrainerStopped):
        logger.info("trainer: stopped")
    finally:
        restore()
        log.close()
    return runs


def _end(log: EventLog) -> int | None:
    try:
        return log.end()
    except Exception as exc:  # noqa: BLE001 - Kafka away: the interval still triggers runs
        logger.warning(f"trainer: cannot read the events topic's end offsets ({exc})")
        return None


def _failed(registry: Registry, config: TrainerConfig, exc: Exception) -> None:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    logger.error(f"trainer: failed: {reason}")
    record = {"ts": int(time.time() * 1000), "decision": "failed", "reason": reason, "metric": config.gate_metric}
    try:
        _append(registry.root / DECISION_LOG, json.dumps(record, separators=(",", ":")))
    except OSError as log_exc:
        logger.error(f"trainer: cannot write {DECISION_LOG}: {log_exc}")


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM stop the trainer (main thread only); returns the function that restores the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise TrainerStopped

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
