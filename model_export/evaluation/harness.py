"""The offline quality harness: our model and the baselines on one data set and protocol, side by side.

    streamrec eval --dataset ml-1m --protocol loo [--json] [--models streamrec,popularity,...]
    streamrec bench quality [-- --datasets ml-100k,ml-1m --protocols loo,time]

Two runs per model, both ranking every item of the data set's (k-core filtered) index, seen items
excluded (:mod:`model_export.evaluation.metrics`):

* the main run is the literature protocol: SASRec's preprocessing (users and items with fewer than
  ``core`` = 5 interactions dropped, :func:`~model_export.data.datasets.k_core`), then ``loo`` or ``time``;
  it gives Recall@10 (= HR@10), NDCG@10, MRR and catalogue coverage@10;
* the cold run trains again with every event of a seeded random ``cold_fraction`` (10%) of the items
  removed from the training data (:func:`~model_export.evaluation.metrics.hide_items`); those items stay in the
  index, so a model sees them as rows without training data. The same test cases are measured:
  ``cold_recall@10`` over the cases whose target is cold, ``warm_recall@10_cold_run`` over the others,
  and ``cold_ratio`` = cold / warm. ``recent-popularity`` is not trained: it reads the stream, where
  the cold items' events stay (hiding them from training does not hide them from the stream), so its
  cold run is its main run's ranking.

Every model ranks the same index: all items of the filtered data set, so under ``time`` an item first
seen after the cutoff is ranked like any item its model has no data for, rather than counted as a
miss as :func:`~model_export.pipeline.evaluate_split` (training index) does.

Seeds are fixed (``seed``: the cold pick and every training), so two runs give the same numbers on CPU.
Progress goes to stdout (the CLI moves it to stderr with ``--json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from model_export.data.datasets import Dataset, k_core, load_dataset
from model_export.data.splits import PROTOCOLS, Ranker, Split, hide_items, item_index, make_split, pick_cold_items
from model_export.evaluation.baselines import (
    ITEMKNN_NEIGHBOURS,
    ITEMKNN_SHRINK,
    itemknn_ranker,
    popularity_ranker,
    recent_popularity_ranker,
)
from model_export.evaluation.metrics import quality_metrics, rank_cases
from streamrec.config import CUTOFF

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from model_export.train import TrainConfig, TrainedModel

# Our model first, then the baselines from the strongest expected to the weakest.
MODELS: tuple[str, ...] = ("streamrec", "sasrec-id", "itemknn", "popularity", "recent-popularity")
BASELINES: tuple[str, ...] = ("itemknn", "popularity", "recent-popularity")
TRAINED: frozenset[str] = frozenset({"streamrec", "sasrec-id"})
# Models that learn nothing from the training data (they read the stream): hiding items from training
# leaves them unchanged, so their cold run is their main run's ranking.
STREAM_ONLY: frozenset[str] = frozenset({"recent-popularity"})


@dataclass(frozen=True)
class HarnessConfig:
    """Settings of one harness run (the models' own hyper-parameters are in their builders)."""

    # SASRec's preprocessing: drop users and items with fewer interactions (1: keep everything).
    core: int = 5
    # Share of the item index hidden from the cold run's training; 0 skips the cold run.
    cold_fraction: float = 0.1
    # Seeds the cold pick and every training.
    seed: int = 0
    # Cut-off of Recall, NDCG and coverage.
    k: int = CUTOFF
    # Held-out share of events (by time) of the ``time`` protocol.
    test_fraction: float = 0.2
    # Training epochs of the neural models (None: TrainConfig's default).
    epochs: int | None = None
    # Stop each training after this many seconds (None: all epochs): bounds a CPU run.
    max_seconds: float | None = None
    # "cuda" trains on a GPU when torch sees one.
    device: str = "cpu"
    # Recent items the neural models read, and windows per training batch (None: the configs' defaults).
    # Long histories (ML-1M) are read at 200 items in the SASRec papers; fewer windows per batch then keep
    # the number of targets per step, and so the optimisation, like that at 50.
    max_len: int | None = None
    batch_size: int | None = None
    # Log the test metrics of the neural models every this many epochs (0: never): a learning curve
    # for the log. It reads the test cases, so it informs reports only; no setting is chosen by it.
    curve_every: int = 0
    # How readily our model recommends items it has no id row for (None: TrainConfig's cold_exposure).
    cold_exposure: float | None = None


@dataclass(frozen=True)
class EvalData:
    """A data set ready for the harness.

    Attributes:
        name: The data set's name.
        events: Its events after the k-core filter, in time order.
        index: Every item of ``events``, sorted: ``index[i]`` is row ``i + 1`` for every model.
        catalog: ``items`` topic records of the index's items, by id (our model reads their text).
        core: The k-core filter applied.
    """

    name: str
    events: list[Mapping[str, Any]]
    index: list[str]
    catalog: Mapping[str, Mapping[str, Any]]
    core: int


def prepare(data: Dataset | str, core: int = 5) -> EvalData:
    """Apply the k-core filter to a data set (or load it by name) and build its item index and catalog."""
    dataset = load_dataset(data) if isinstance(data, str) else data
    events = k_core(dataset.events, core)
    index = item_index({"": [str(e["item_id"]) for e in events]})
    wanted = set(index)
    catalog = {str(it["item_id"]): it for it in dataset.items if str(it["item_id"]) in wanted}
    return EvalData(dataset.name, events, index, catalog, core)


def train_config(cfg: HarnessConfig) -> TrainConfig:
    """Training settings shared by the neural models: epochs, time bound, device, seed-free."""
    from dataclasses import replace

    from model_export.train import TrainConfig

    base = TrainConfig(test_fraction=cfg.test_fraction, k=cfg.k, device=cfg.device, max_seconds=cfg.max_seconds)
    if cfg.epochs is not None:
        base = replace(base, epochs=cfg.epochs)
    if cfg.batch_size is not None:
        base = replace(base, batch_size=cfg.batch_size)
    if cfg.max_len is not None:
        base = replace(base, model=replace(base.model, max_len=cfg.max_len))
    if cfg.cold_exposure is not None:
        base = replace(base, cold_exposure=cfg.cold_exposure)
    return base


def sasrec_id_config(cfg: HarnessConfig) -> TrainConfig:
    """``sasrec-id``: our SASRec with item ids only (no time gaps, scenarios or text): the one place for those flags."""
    from dataclasses import replace

    base = train_config(cfg)
    return replace(base, model=replace(base.model, time_gaps=False, scenarios=False, text=False))


def streamrec_config(cfg: HarnessConfig) -> TrainConfig:
    """``streamrec``: our model as it is trained for serving: the one place for its configuration."""
    return train_config(cfg)


@dataclass(frozen=True)
class Fitted:
    """A model ready to rank, with what its fitting cost."""

    ranker: Ranker
    train_seconds: float
    info: dict[str, Any]


def fit(name: str, split: Split, data: EvalData, cfg: HarnessConfig) -> Fitted:
    """Fit model ``name`` (one of :data:`MODELS`) on ``split.train``, over the item index ``data.index``.

    Raises:
        ValueError: ``name`` is not one of :data:`MODELS`.
    """
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    rank: Ranker
    if name == "popularity":
        rank = popularity_ranker(split.train, data.index)
    elif name == "recent-popularity":
        rank = recent_popularity_ranker(split.sequences, split.times, data.index)
    elif name == "itemknn":
        rank = itemknn_ranker(split.train, data.index)
        info = {"neighbours": ITEMKNN_NEIGHBOURS, "shrink": ITEMKNN_SHRINK}
    elif name in TRAINED:
        from model_export.train import train, train_split

        curve = _curve_logger(name, split, data, cfg) if cfg.curve_every > 0 else None
        if name == "sasrec-id":
            trained = train(split.train, sasrec_id_config(cfg), cfg.seed, items=data.index, on_epoch=curve)
        else:
            # train_split: the same training data, with each event's time and scenario for the context inputs.
            trained = train_split(
                split, streamrec_config(cfg), cfg.seed, items=data.index, catalog=data.catalog, on_epoch=curve
            )
        rank = trained.ranker()
        info = {"epochs_run": trained.epochs_run, "final_loss": round(trained.final_loss, 4)}
    else:
        msg = f"unknown model {name!r}; use some of {', '.join(MODELS)}"
        raise ValueError(msg)
    return Fitted(rank, time.perf_counter() - t0, info)


def _curve_logger(name: str, split: Split, data: EvalData, cfg: HarnessConfig) -> Callable[[TrainedModel], None]:
    """An ``on_epoch`` callback that prints the test metrics every ``cfg.curve_every`` epochs."""

    def log(snapshot: TrainedModel) -> None:
        if snapshot.epochs_run % cfg.curve_every:
            return
        device = next(snapshot.model.parameters()).device
        snapshot.model.to("cpu")
        m = quality_metrics(rank_cases(snapshot.ranker(), split, data.index, cfg.k), split)
        snapshot.model.to(device)
        logger.info(
            f"  curve {name} epoch {snapshot.epochs_run}: recall@{cfg.k} {m[f'recall@{cfg.k}']:.4f}  "
            f"ndcg@{cfg.k} {m[f'ndcg@{cfg.k}']:.4f}",
        )

    return log


def _round(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Seconds to 0.1 s; metrics keep full precision."""
    return {k: round(v, 1) if k.endswith("seconds") else v for k, v in metrics.items()}


def evaluate_models(
    data: EvalData,
    protocol: str,
    models: Sequence[str] = MODELS,
    cfg: HarnessConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fit and measure each model on one protocol: the main run, then (unless disabled) the cold run.

    Args:
        data: From :func:`prepare`.
        protocol: One of :data:`~model_export.evaluation.metrics.PROTOCOLS`.
        models: Names from :data:`MODELS`.
        cfg: Settings; defaults to :class:`HarnessConfig`.
        log: Where progress lines go.

    Returns:
        ``{"dataset", "protocol", "models": {name: {"recall@10", "ndcg@10", "mrr", "coverage@10",
        "cases", "users", "train_seconds", "eval_seconds", "cold_recall@10", "cold_cases",
        "warm_recall@10_cold_run", "cold_ratio", "cold_mrr", "warm_mrr_cold_run", "cold_train_seconds", ...}}}``;
        the cold keys are None without a cold run.

    Raises:
        ValueError: an unknown model or protocol.
    """
    cfg = cfg or HarnessConfig()
    unknown = [m for m in models if m not in MODELS]
    if unknown or protocol not in PROTOCOLS:
        msg = f"unknown model(s) {unknown} or protocol {protocol!r}; models: {MODELS}, protocols: {PROTOCOLS}"
        raise ValueError(msg)
    k = cfg.k
    split = make_split(data.events, protocol, cfg.test_fraction)
    cold = pick_cold_items(data.index, cfg.cold_fraction, cfg.seed) if cfg.cold_fraction > 0 else frozenset()
    hidden = hide_items(split, cold) if cold else None
    cold_note = f"cold run: {len(cold)} items hidden from training" if cold else "no cold run"
    log(
        f"[{data.name} {protocol}] {len(data.events)} events (core {data.core}), {len(data.index)} items, "
        f"{len(split.cases)} cases; {cold_note}"
    )
    out: dict[str, Any] = {}
    for name in models:
        log(f"[{data.name} {protocol}] {name}: main run")
        fitted = fit(name, split, data, cfg)
        t0 = time.perf_counter()
        ranked = rank_cases(fitted.ranker, split, data.index, k)
        entry: dict[str, Any] = quality_metrics(ranked, split)
        entry |= {"train_seconds": fitted.train_seconds, "eval_seconds": time.perf_counter() - t0, **fitted.info}
        entry |= {f"cold_recall@{k}": None, "cold_cases": 0, f"warm_recall@{k}_cold_run": None, "cold_ratio": None}
        entry |= {"cold_mrr": None, "warm_mrr_cold_run": None}
        if hidden is not None:
            if name in STREAM_ONLY:
                cold_seconds = 0.0
            else:
                log(f"[{data.name} {protocol}] {name}: cold run")
                cold_fit = fit(name, hidden, data, cfg)
                cold_seconds = cold_fit.train_seconds
                ranked = rank_cases(cold_fit.ranker, hidden, data.index, k)
            c = quality_metrics(ranked, hidden, cold)
            cold_r, warm_r = c[f"cold_recall@{k}"], c[f"warm_recall@{k}"]
            entry |= {
                f"cold_recall@{k}": cold_r,
                "cold_cases": c["cold_cases"],
                "cold_mrr": c["cold_mrr"],
                "warm_mrr_cold_run": c["warm_mrr"],
                f"warm_recall@{k}_cold_run": warm_r,
                "cold_ratio": cold_r / warm_r if cold_r is not None and warm_r else None,
                "cold_train_seconds": cold_seconds,
            }
        out[name] = _round(entry)
        log(
            f"[{data.name} {protocol}] {name}: recall@{k} {entry[f'recall@{k}']:.4f}  ndcg@{k} "
            f"{entry[f'ndcg@{k}']:.4f}  mrr {entry['mrr']:.4f}  coverage@{k} {entry[f'coverage@{k}']:.4f}  "
            f"cold recall@{k} {_fmt(entry[f'cold_recall@{k}'])}  ({entry['train_seconds']:.1f}s to fit)"
        )
    return {"dataset": data.name, "protocol": protocol, "models": out}


def settings(cfg: HarnessConfig) -> dict[str, Any]:
    """The settings of a run, for result files: the harness's and each neural model's."""
    return {
        **asdict(cfg),
        "itemknn": {"neighbours": ITEMKNN_NEIGHBOURS, "shrink": ITEMKNN_SHRINK},
        "streamrec": asdict(streamrec_config(cfg)),
        "sasrec-id": asdict(sasrec_id_config(cfg)),
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def table(rows: Sequence[Mapping[str, Any]], k: int = CUTOFF) -> list[str]:
    """Lines of a plain-text table of result rows (``dataset``, ``protocol``, ``model`` + a model's metrics)."""
    head = (
        f"{'dataset':8} {'protocol':16} {'model':24} {f'R@{k}':>7} {f'N@{k}':>7} {'MRR':>7} {f'cov@{k}':>7} "
        f"{f'coldR@{k}':>8} {'cold/in':>7} {'train s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ts = r.get("train_seconds")
        lines.append(
            f"{r['dataset']:8} {r['protocol']:16} {r['model']:24} {_fmt(r.get(f'recall@{k}')):>7} "
            f"{_fmt(r.get(f'ndcg@{k}')):>7} {_fmt(r.get('mrr')):>7} {_fmt(r.get(f'coverage@{k}')):>7} "
            f"{_fmt(r.get(f'cold_recall@{k}')):>8} {_fmt(r.get('cold_ratio')):>7} "
            f"{'-' if ts is None else f'{ts:.1f}':>8}"
        )
    return lines
