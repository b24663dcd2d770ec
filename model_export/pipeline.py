"""One model version from events: train -> evaluate -> export -> describe.

Run (via the CLI): ``streamrec train --dataset ml-100k``; from Python::

    from model_export.pipeline import train_and_export
    train_and_export("ml-100k", Path("build/models"), seed=0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_export.artifact.export import export_artifact
from model_export.data.datasets import load_dataset
from model_export.data.splits import PROTOCOLS, Split, make_split
from model_export.evaluation.baselines import popularity_ranker
from model_export.evaluation.metrics import evaluate
from model_export.train import TrainConfig, TrainedModel, train_split

log = logging.getLogger(__name__)



def evaluate_split(
    split: Split,
    config: TrainConfig,
    seed: int,
    catalog: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
    """Train on a split's training data and measure the model and the popularity baseline on it.

    Returns:
        The model, and ``{"streamrec": metrics, "popularity": metrics, "cutoff_ts": ..., "train_seconds": ...}``.
    """
    trained = train_split(split, config, seed, catalog=catalog)
    results: dict[str, Any] = {
        "streamrec": evaluate(trained.ranker(), split, trained.items, config.k),
        "popularity": evaluate(popularity_ranker(split.train, trained.items), split, trained.items, config.k),
        "cutoff_ts": split.cutoff_ts,
        "train_seconds": round(trained.train_seconds, 1),
    }
    for name in ("streamrec", "popularity"):
        m = results[name]
        log.info(
            f"  {split.protocol:>4} {name:<10} recall@{config.k} {m[f'recall@{config.k}']:.4f}  "
            f"ndcg@{config.k} {m[f'ndcg@{config.k}']:.4f}  mrr {m['mrr']:.4f}  "
            f"({m['cases']} cases, {m['users']} users)",
        )
    return trained, results


def describe_training_data(split: Split, source: str) -> dict[str, Any]:
    """The contract's ``train_data`` of a model trained on ``split.train``: source, time range and size."""
    return {
        "source": source,
        "min_ts": split.min_ts,
        "max_ts": split.max_ts,
        "events": sum(map(len, split.train.values())),
        "users": len(split.train),
    }


def train_and_export_events(
    events: Iterable[Mapping[str, Any]],
    out_dir: Path,
    *,
    name: str = "events",
    seed: int = 0,
    config: TrainConfig | None = None,
    parent: str | None = None,
    catalog: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Train, evaluate (``time`` and ``loo``), export and parity-check a model from event records.

    The ``time`` and ``loo`` protocols each train a model only to measure it (the contract's ``metrics``:
    held-out figures of the same configuration and seed). The exported model is then trained on every
    event, each user's latest included: in a stream the latest event says most about what comes next,
    and a served model that never learnt it would start a step behind. Its contract's ``train_data``
    describes those events, and ``hyper_parameters.metrics_from`` says where the metrics come from.

    Args:
        events: ``events`` topic records in any order (e.g. the retained Kafka log).
        out_dir: Parent folder; the artifact goes to ``out_dir/<model_version>/``.
        name: Data source name, recorded in the contract and the version string.
        seed: Seed of every training.
        config: Training settings; defaults to :class:`TrainConfig`.
        parent: Version this model derives from (recorded in the contract).
        catalog: ``items`` records by item id, for the text tower (see :func:`train`).

    Returns:
        The verified artifact directory.
    """
    cfg = config or TrainConfig()
    events = list(events)
    metrics: dict[str, Any] = {}
    measured: TrainedModel | None = None
    loo: Split | None = None
    for protocol in ("time", "loo"):
        split = make_split(events, protocol, cfg.test_fraction)
        log.info(f"[{name}] {protocol}: training on {sum(map(len, split.train.values()))} events")
        trained, metrics[protocol] = evaluate_split(split, cfg, seed, catalog)
        if protocol == "loo":
            measured, loo = trained, split
    assert measured is not None and loo is not None and set(metrics) == set(PROTOCOLS)
    everything = replace(loo, train=loo.sequences, min_ts=min(min(t) for t in loo.times.values() if t),
                         max_ts=max(max(t) for t in loo.times.values() if t))
    # The same number of epochs as the measured loo model ran (fewer than cfg.epochs if max_seconds cut it).
    served_cfg = replace(cfg, epochs=measured.epochs_run)
    log.info(f"[{name}] serving model: training on all {sum(map(len, everything.train.values()))} events")
    served = train_split(everything, served_cfg, seed, catalog=catalog)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    version = f"{name}-{stamp}"
    train_data = describe_training_data(everything, name)
    hyper = {
        "seed": seed,
        **asdict(served_cfg),
        "epochs_run": served.epochs_run,
        "final_loss": served.final_loss,
        "metrics_from": "the loo and time evaluation runs of this configuration and seed; the served weights "
        "trained on every event",
    }
    return export_artifact(
        served.model,
        served.items,
        out_dir / version,
        version=version,
        metrics=metrics,
        train_data=train_data,
        parent=parent,
        hyper_parameters=hyper,
        scenarios=served.scenarios,
    )


def train_and_export(
    dataset_name: str,
    out_dir: Path,
    *,
    seed: int = 0,
    epochs: int | None = None,
    max_events: int | None = None,
    config: TrainConfig | None = None,
) -> Path:
    """Train, evaluate, export and parity-check a model on a shipped data set.

    Args:
        dataset_name: One of :data:`model_export.data.datasets.DATASETS`.
        out_dir: Parent folder; the artifact goes to ``out_dir/<dataset>-<UTC stamp>/``.
        seed: Seed of the trainings.
        epochs: Overrides ``config.epochs``.
        max_events: Use only the first N events in time order (quick runs and tests).
        config: Training settings; defaults to :class:`TrainConfig`.

    Returns:
        The verified artifact directory (publish it with :meth:`model_export.artifact.registry.Registry.publish`).
    """
    cfg = config or TrainConfig()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    t0 = time.perf_counter()
    data = load_dataset(dataset_name)
    events = data.events[:max_events] if max_events is not None else data.events
    log.info(f"[{dataset_name}] {len(events)} events loaded in {time.perf_counter() - t0:.1f}s")
    catalog = {str(r["item_id"]): r for r in data.items}
    return train_and_export_events(events, out_dir, name=dataset_name, seed=seed, config=cfg, catalog=catalog)
