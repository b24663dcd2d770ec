"""The offline quality harness: our model and the baselines on one data set and protocol, side by side.

    streamrec eval --dataset ml-1m --protocol loo [--json] [--models streamrec,popularity,...] [--seeds 3]
    streamrec bench quality [-- --datasets ml-100k,ml-1m --protocols loo,time --seeds 3]

Every protocol is a :class:`~model_export.data.splits.Holdout`: one training set, a validation split on
which every choice is made (the neural models' epoch among them), and a test split, read once per final
configuration (``HarnessConfig.test=False`` reads none: for sweeps of choices). Both rank every item of the
index, seen items excluded (:mod:`model_export.evaluation.metrics`):

* ``loo``: SASRec's preprocessing of the whole data set (users and items with fewer than ``core`` = 5
  interactions dropped, :func:`~model_export.data.datasets.k_core`); each user's last item is the test
  target, the one before it the validation target, the rest trains. The index is the filtered data
  set's items. Models that rank new items (:data:`SCORES_NEW_ITEMS`) also get a cold run: trained again
  with every event of a seeded random ``cold_fraction`` (10%) of the index hidden, measured on the same
  test cases (``cold_recall@10`` over the cases whose target is hidden, ``warm_recall@10_cold_run`` over
  the others, ``cold_ratio``). The hidden items are drawn from the 5-core index, so each had at least 5
  ratings in the full data: a cold item here is a known item whose events were withheld.
* ``time``: without the future. The first 70% of events (by time) train, after a ``core`` filter computed
  on them alone; the next 10% are validation cases, the last 20% test cases, each with all of the user's
  earlier events as history. The index is every item of the catalogue and the log, so an item first seen
  after the training period is a new item however rarely it is rated later, ranked from what the model
  can read of it (our model: its text); ``cold_recall@10`` is measured on those targets.

Metrics are means over ``seeds`` trainings with a 95% interval over seeds, and a bootstrap over users
of the test cases; streamrec and sasrec-id are compared on the same test cases by a paired bootstrap.
Seeds are fixed, so two runs give the same numbers on CPU. Progress goes to stdout (the CLI moves it to
stderr with ``--json``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from model_export.data.datasets import Dataset, k_core, load_dataset
from model_export.data.splits import (
    PROTOCOLS,
    VALIDATION_FRACTION,
    Holdout,
    Ranker,
    Split,
    hide_items,
    holdout,
    item_index,
    pick_cold_items,
)
from model_export.evaluation.baselines import (
    ITEMKNN_NEIGHBOURS,
    ITEMKNN_SHRINK,
    itemknn_ranker,
    popularity_ranker,
    recent_popularity_ranker,
)
from model_export.evaluation.metrics import CaseRanks, by_history, case_gains, quality_metrics, rank_cases
from streamrec.config import CUTOFF

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from model_export.train import TrainConfig, TrainedModel

# Our model first, then the baselines from the strongest expected to the weakest.
MODELS: tuple[str, ...] = ("streamrec", "sasrec-id", "itemknn", "popularity", "recent-popularity")
BASELINES: tuple[str, ...] = ("itemknn", "popularity", "recent-popularity")
TRAINED: frozenset[str] = frozenset({"streamrec", "sasrec-id"})


@dataclass(frozen=True)
class HarnessConfig:
    """Settings of one harness run (the models' own hyper-parameters are in their builders)."""

    # SASRec's preprocessing: drop users and items with fewer interactions (1: keep everything). Under
    # ``loo`` it filters the whole data set (the literature protocol); under ``time`` the training period only.
    core: int = 5
    # Share of the item index hidden from the ``loo`` cold run's training; 0 skips it. (``time`` needs no
    # cold run: every item first seen after its training period is new.)
    cold_fraction: float = 0.1
    # The first seed; ``seeds`` trainings use seed, seed + 1, ... (each seeds its cold pick and training).
    seed: int = 0
    seeds: int = 1
    # Cut-off of Recall, NDCG and coverage.
    k: int = CUTOFF
    # Held-out share of events (by time) of the ``time`` protocol, and the validation share before it.
    test_fraction: float = 0.2
    validation_fraction: float = VALIDATION_FRACTION
    # Training epochs of the neural models (None: TrainConfig's default).
    epochs: int | None = None
    # Stop each training after this many seconds (None: all epochs): bounds a CPU run.
    max_seconds: float | None = None
    # "cuda" trains on a GPU when torch sees one.
    device: str = "cpu"
    # Recent items the neural models read, and windows per training batch (None: the configs' defaults).
    max_len: int | None = None
    batch_size: int | None = None
    # Log the validation metrics of the neural models every this many epochs (0: never).
    curve_every: int = 0
    # How readily our model recommends items it has no id row for (None: TrainConfig's cold_exposure).
    cold_exposure: float | None = None
    # Training settings to override, ``(("lr", "0.001"), ("model.dropout", "0.3"))``: values are JSON.
    train_overrides: tuple[tuple[str, str], ...] = ()
    # False: measure the validation split only (a sweep of choices reads no test case).
    test: bool = True
    # How events with equal timestamps are ordered (:data:`TIES`), for :func:`prepare`.
    ties: str = "file"


@dataclass(frozen=True)
class EvalData:
    """A data set ready for the harness.

    Attributes:
        name: The data set's name.
        events: Its events after the k-core filter, in time order: what ``loo`` splits.
        index: Every item of ``events``, sorted: ``index[i]`` is row ``i + 1`` for every model under ``loo``.
        catalog: ``items`` topic records by id, every item of the data set (our model reads their text).
        core: The k-core filter applied.
        raw_events: Every event, unfiltered, in time order: what ``time`` splits (it filters its training
            period alone).
        ties: How events with equal timestamps are ordered (:data:`TIES`).
    """

    name: str
    events: list[Mapping[str, Any]]
    index: list[str]
    catalog: Mapping[str, Mapping[str, Any]]
    core: int
    raw_events: list[Mapping[str, Any]] = field(default_factory=list)
    ties: str = "file"

    def time_index(self) -> list[str]:
        """The ``time`` protocol's item index: every item of the catalogue or the log, rated early, late or never."""
        return sorted({str(e["item_id"]) for e in self.raw_events} | set(self.catalog))


# "file": equal timestamps keep the data file's order (a stable sort), as SASRec's and the eSASRec
# benchmark's preprocessing do; "quicksort": the order an unstable quicksort by timestamp gives, as the HSTU
# repositories' preprocessing (pandas' default ``sort_values``) does, to compare with their published figures.
TIES: tuple[str, ...] = ("file", "quicksort")


def order_ties(events: Sequence[Mapping[str, Any]], ties: str) -> list[Mapping[str, Any]]:
    """Events (in file order) in time order, equal timestamps ordered as ``ties`` says (:data:`TIES`).

    Raises:
        ValueError: ``ties`` is not one of :data:`TIES`.
    """
    if ties not in TIES:
        msg = f"unknown tie order {ties!r}; use one of {', '.join(TIES)}"
        raise ValueError(msg)
    ts = np.array([int(e["ts"]) for e in events], dtype=np.int64)
    # numpy's quicksort is what pandas' sort_values runs by default.
    order = np.argsort(ts, kind="stable" if ties == "file" else "quicksort")
    return [events[i] for i in order]


def prepare(data: Dataset | str, core: int = 5, ties: str = "file") -> EvalData:
    """Order ties, apply the k-core filter to a data set (or load it by name), build its item index and catalog."""
    if isinstance(data, str):
        dataset = load_dataset(data, file_order=ties != "file")
    else:
        dataset = data
    raw: list[Mapping[str, Any]] = order_ties(dataset.events, ties) if ties != "file" else list(dataset.events)
    events = k_core(raw, core)
    index = item_index({"": [str(e["item_id"]) for e in events]})
    catalog = {str(it["item_id"]): it for it in dataset.items}
    return EvalData(dataset.name, events, index, catalog, core, raw, ties)


def _override(obj: Any, key: str, raw: str) -> Any:
    """``obj`` (a dataclass) with ``key`` (dotted into nested dataclasses) set to the JSON value ``raw``."""
    head, _, rest = key.partition(".")
    if head not in {f.name for f in fields(obj)}:
        msg = f"unknown training setting {key!r}"
        raise ValueError(msg)
    value = _override(getattr(obj, head), rest, raw) if rest else json.loads(raw)
    return replace(obj, **{head: value})


def train_config(cfg: HarnessConfig) -> TrainConfig:
    """Training settings shared by the neural models: epochs, time bound, device, overrides; seed-free."""
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
    for key, raw in cfg.train_overrides:
        base = _override(base, key, raw)
    return base


def sasrec_id_config(cfg: HarnessConfig) -> TrainConfig:
    """``sasrec-id``: our SASRec with item ids only (no time gaps, scenarios or text): the one place for those flags."""
    base = train_config(cfg)
    return replace(base, model=replace(base.model, time_gaps=False, scenarios=False, text=False))


def streamrec_config(cfg: HarnessConfig) -> TrainConfig:
    """``streamrec``: our model as it is trained for serving: the one place for its configuration."""
    return train_config(cfg)


@dataclass(frozen=True)
class Fitted:
    """A model ready to rank each split, with what its fitting cost."""

    validation: Ranker
    test: Ranker
    train_seconds: float
    info: dict[str, Any]


def fit(name: str, ho: Holdout, index: Sequence[str], data: EvalData, cfg: HarnessConfig, seed: int) -> Fitted:
    """Fit model ``name`` (one of :data:`MODELS`) on ``ho.train`` over ``index``.

    Neural models pick their epoch on the validation split (NDCG@k, every ``validate_every`` epochs).

    Raises:
        ValueError: ``name`` is not one of :data:`MODELS`.
    """
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if name == "recent-popularity":
        # It reads the stream up to each case's time: each split's own log, so validation never sees a test event.
        val = recent_popularity_ranker(ho.validation.sequences, ho.validation.times, index)
        return Fitted(val, recent_popularity_ranker(ho.test.sequences, ho.test.times, index),
                      time.perf_counter() - t0, info)
    rank: Ranker
    if name == "popularity":
        rank = popularity_ranker(ho.train, index)
    elif name == "itemknn":
        rank = itemknn_ranker(ho.train, index)
        info = {"neighbours": ITEMKNN_NEIGHBOURS, "shrink": ITEMKNN_SHRINK}
    elif name in TRAINED:
        from model_export.train import train, train_split

        select = _validation_score(name, ho.validation, index, cfg)
        if name == "sasrec-id":
            trained = train(ho.train, sasrec_id_config(cfg), seed, items=index, select=select)
        else:
            # train_split: the same training data, with each event's time and scenario for the context inputs.
            trained = train_split(
                ho.validation, streamrec_config(cfg), seed, items=index, catalog=data.catalog, select=select
            )
        rank = trained.ranker()
        info = {"epochs_run": trained.epochs_run, "selected_epoch": trained.selected_epoch,
                "final_loss": round(trained.final_loss, 4), "validation_curve": trained.validation_curve}
    else:
        msg = f"unknown model {name!r}; use some of {', '.join(MODELS)}"
        raise ValueError(msg)
    return Fitted(rank, rank, time.perf_counter() - t0, info)


def _validation_score(
    name: str, split: Split, index: Sequence[str], cfg: HarnessConfig
) -> Callable[[TrainedModel], float]:
    """NDCG@k of a model so far on the validation cases: what picks its epoch (never a test case)."""

    def score(snapshot: TrainedModel) -> float:
        device = next(snapshot.model.parameters()).device
        snapshot.model.to("cpu")
        m = quality_metrics(rank_cases(snapshot.ranker(), split, index, cfg.k), split)
        snapshot.model.to(device)
        if cfg.curve_every > 0 and snapshot.epochs_run % cfg.curve_every == 0:
            logger.info(f"  curve {name} epoch {snapshot.epochs_run}: validation recall@{cfg.k} "
                        f"{m[f'recall@{cfg.k}']:.4f}  ndcg@{cfg.k} {m[f'ndcg@{cfg.k}']:.4f}")
        return float(m[f"ndcg@{cfg.k}"])

    return score


# Models that can rank an item without any event: the ``loo`` cold run is measured for them alone (for
# the others an item hidden from training has no input at all).
SCORES_NEW_ITEMS: frozenset[str] = frozenset({"streamrec"})
# The metrics given with a 95% interval.
INTERVAL_METRICS: tuple[str, ...] = (
    "recall@{k}", "ndcg@{k}", "mrr", "cold_recall@{k}", "warm_recall@{k}", "cold_ratio",
)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
BOOTSTRAP_SAMPLES = 1000


def seed_interval(values: Sequence[float]) -> list[float] | None:
    """The 95% t-interval of a mean over seeds (None with fewer than two)."""
    if len(values) < 2:
        return None
    a = np.asarray(values, dtype=np.float64)
    half = _T95.get(len(a) - 1, 1.96) * a.std(ddof=1) / np.sqrt(len(a))
    return [float(a.mean() - half), float(a.mean() + half)]


def _user_means(gains: np.ndarray, users: Sequence[str], seed: int) -> np.ndarray:
    """Cluster-bootstrap means of per-case gains (C,): each draw resamples users, their cases together."""
    names, of_case = np.unique(np.asarray(users), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=BOOTSTRAP_SAMPLES)
    w = draws.astype(np.float64)  # (S, U)
    sums = np.bincount(of_case, weights=np.asarray(gains, dtype=np.float64), minlength=len(names))
    counts = np.bincount(of_case, minlength=len(names)).astype(np.float64)
    return (w @ sums) / np.maximum(w @ counts, 1.0)


def user_bootstrap(gains: np.ndarray, users: Sequence[str], seed: int = 0) -> list[float]:
    """95% percentile interval of a mean per-case gain (C,), resampling users (their cases go together)."""
    lo, hi = np.percentile(_user_means(gains, users, seed), [2.5, 97.5])
    return [float(lo), float(hi)]


def paired_test(a: np.ndarray, b: np.ndarray, users: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Model A against model B on the same cases, by a paired cluster bootstrap over users.

    Returns the mean difference of the per-case gains (C,) ``a - b``, its 95% interval and a two-sided p-value.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = _user_means(d, users, seed)
    lo, hi = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2.0 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return {"difference": float(d.mean()), "ci": [float(lo), float(hi)], "p": max(p, 1.0 / BOOTSTRAP_SAMPLES)}


def _measure(
    ranker: Ranker, split: Split, index: Sequence[str], k: int, cold: frozenset[str]
) -> tuple[dict[str, Any], CaseRanks]:
    ranked = rank_cases(ranker, split, index, k)
    m = quality_metrics(ranked, split, cold)
    if cold:
        cr, wr = m.get(f"cold_recall@{k}"), m.get(f"warm_recall@{k}")
        m["cold_ratio"] = cr / wr if cr is not None and wr else None
    else:  # the same keys in every entry: None where nothing is cold
        m |= {f"cold_recall@{k}": None, "cold_cases": 0, f"warm_recall@{k}": None, "cold_mrr": None,
              "warm_mrr": None, "cold_ratio": None}
    m["by_history"] = by_history(ranked, split)
    return m, ranked


def _mean_of(runs: Sequence[Mapping[str, Any]], k: int) -> dict[str, Any]:
    """Per-seed metric dicts -> means (numbers), with a 95% interval over seeds for :data:`INTERVAL_METRICS`."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        if isinstance(first, bool) or key.endswith("seconds"):
            continue
        if isinstance(first, int | float) or first is None:
            vals = [r.get(key) for r in runs]
            nums = [float(v) for v in vals if isinstance(v, int | float)]
            out[key] = float(np.mean(nums)) if len(nums) == len(vals) and nums else None
            if key in {m.format(k=k) for m in INTERVAL_METRICS} and len(nums) == len(vals):
                out[f"{key}_ci"] = seed_interval(nums)
        elif key == "by_history":
            out[key] = {
                b: {mk: (int if mk == "cases" else float)(np.mean([r[key][b][mk] for r in runs])) for mk in first[b]}
                for b in first
            }
    return out


def evaluate_models(
    data: EvalData,
    protocol: str,
    models: Sequence[str] = MODELS,
    cfg: HarnessConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fit each model once per seed, measure it on validation, then (``cfg.test``) on the test split.

    Under ``loo``, models that rank new items (:data:`SCORES_NEW_ITEMS`) are also fitted in a cold run with
    ``cold_fraction`` of the items hidden from training; under ``time``, the new items are those without
    training events, measured in the main run.

    Args:
        data: From :func:`prepare`.
        protocol: One of :data:`~model_export.data.splits.PROTOCOLS`.
        models: Names from :data:`MODELS`.
        cfg: Settings; defaults to :class:`HarnessConfig`.
        log: Where progress lines go.

    Returns:
        ``{"dataset", "protocol", "validation_cases", "test_cases", "new_items", "models": {name: {
        "validation": metrics, "test": metrics (None without ``cfg.test``), "seeds", "per_seed": [...],
        "train_seconds"}}, "paired": {...}}``. Metrics are means over seeds: ``recall@10``, ``ndcg@10``,
        ``mrr``, ``coverage@10``, each of :data:`INTERVAL_METRICS` with ``_ci`` (over seeds; None with one
        seed) and, in ``test``, ``_ci_users`` (a bootstrap over users of the seed-averaged cases) and
        ``by_history``. ``paired`` compares streamrec with sasrec-id on the same test cases.

    Raises:
        ValueError: an unknown model or protocol.
    """
    cfg = cfg or HarnessConfig()
    unknown = [m for m in models if m not in MODELS]
    if unknown or protocol not in PROTOCOLS:
        msg = f"unknown model(s) {unknown} or protocol {protocol!r}; models: {MODELS}, protocols: {PROTOCOLS}"
        raise ValueError(msg)
    k = cfg.k
    seeds = list(range(cfg.seed, cfg.seed + max(cfg.seeds, 1)))
    if protocol == "loo":
        ho, index = holdout(data.events, "loo"), data.index
        new_items: frozenset[str] = frozenset()
    else:
        ho = holdout(data.raw_events, "time", cfg.test_fraction, cfg.validation_fraction, data.core)
        index = data.time_index()
        trained_items = {i for seq in ho.train.values() for i in seq}
        new_items = frozenset(i for i in index if i not in trained_items)
    log(
        f"[{data.name} {protocol}] {sum(map(len, ho.train.values()))} training events, {len(index)} items "
        f"({len(new_items)} without training events), {len(ho.validation.cases)} validation and "
        f"{len(ho.test.cases)} test cases; seeds {seeds}"
    )
    test_users = [u for u, _ in ho.test.cases]
    out: dict[str, Any] = {}
    test_gains: dict[str, list[dict[str, np.ndarray]]] = {}
    for name in models:
        runs: list[dict[str, Any]] = []
        for seed in seeds:
            log(f"[{data.name} {protocol}] {name} seed {seed}: fit")
            fitted = fit(name, ho, index, data, cfg, seed)
            val, _ = _measure(fitted.validation, ho.validation, index, k, new_items)
            run: dict[str, Any] = {"seed": seed, "validation": val, "test": None,
                                   "train_seconds": round(fitted.train_seconds, 1), **fitted.info}
            if cfg.test:
                t0 = time.perf_counter()
                test, ranked = _measure(fitted.test, ho.test, index, k, new_items)
                test["eval_seconds"] = round(time.perf_counter() - t0, 1)
                test_gains.setdefault(name, []).append(case_gains(ranked.ranks, k))
                if protocol == "loo" and cfg.cold_fraction > 0 and name in SCORES_NEW_ITEMS:
                    cold = pick_cold_items(index, cfg.cold_fraction, seed)
                    log(f"[{data.name} {protocol}] {name} seed {seed}: cold run, {len(cold)} items hidden")
                    hidden = Holdout(hide_items(ho.validation, cold), hide_items(ho.test, cold))
                    cold_fit = fit(name, hidden, index, data, cfg, seed)
                    c, _ = _measure(cold_fit.test, ho.test, index, k, cold)
                    test |= {key: c[key] for key in (f"cold_recall@{k}", "cold_cases", "cold_mrr", "cold_ratio")}
                    test |= {f"warm_recall@{k}_cold_run": c[f"warm_recall@{k}"], "warm_mrr_cold_run": c["warm_mrr"]}
                    run["cold_train_seconds"] = round(cold_fit.train_seconds, 1)
                run["test"] = test
            runs.append(run)
            log(f"[{data.name} {protocol}] {name} seed {seed}: " + _line(val, run["test"], k))
        entry: dict[str, Any] = {
            "seeds": seeds,
            "validation": _mean_of([r["validation"] for r in runs], k),
            "test": _mean_of([r["test"] for r in runs], k) if cfg.test else None,
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "per_seed": runs,
        }
        if cfg.test:
            for metric in (f"recall@{k}", f"ndcg@{k}"):
                per_case = np.mean([g[metric] for g in test_gains[name]], axis=0)
                entry["test"][f"{metric}_ci_users"] = user_bootstrap(per_case, test_users)
        out[name] = entry
    paired: dict[str, Any] = {}
    if cfg.test and {"streamrec", "sasrec-id"} <= set(test_gains):
        paired["streamrec vs sasrec-id"] = {
            metric: paired_test(np.mean([g[metric] for g in test_gains["streamrec"]], axis=0),
                                np.mean([g[metric] for g in test_gains["sasrec-id"]], axis=0), test_users)
            for metric in (f"recall@{k}", f"ndcg@{k}")
        }
    return {
        "dataset": data.name, "protocol": protocol, "ties": data.ties, "core": data.core,
        "training_events": sum(map(len, ho.train.values())), "items": len(index), "new_items": len(new_items),
        "validation_cases": len(ho.validation.cases), "test_cases": len(ho.test.cases) if cfg.test else None,
        "models": out, "paired": paired,
    }


def _line(val: Mapping[str, Any], test: Mapping[str, Any] | None, k: int) -> str:
    text = f"validation recall@{k} {val[f'recall@{k}']:.4f} ndcg@{k} {val[f'ndcg@{k}']:.4f}"
    if test is not None:
        text += (f"; test recall@{k} {test[f'recall@{k}']:.4f} ndcg@{k} {test[f'ndcg@{k}']:.4f}"
                 f" cold recall@{k} {_fmt(test.get(f'cold_recall@{k}'))}")
    return text


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


def _ci_text(ci: Sequence[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:.3f},{ci[1]:.3f}]"


def table(rows: Sequence[Mapping[str, Any]], k: int = CUTOFF) -> list[str]:
    """Lines of a plain-text table of result rows: ``dataset``, ``protocol``, ``model`` and metrics.

    A row holds a harness entry's ``validation``/``test`` metrics (means; test intervals over seeds, else
    over users) or flat metrics (the published rows).
    """
    head = (
        f"{'dataset':8} {'protocol':16} {'model':24} {f'val R@{k}':>9} {f'val N@{k}':>9} {f'R@{k}':>7} "
        f"{'95% CI':>15} {f'N@{k}':>7} {'95% CI':>15} {'MRR':>7} {f'cov@{k}':>7} {f'coldR@{k}':>8} "
        f"{'cold/in':>7} {'seeds':>5} {'train s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        val = r.get("validation") or {}
        test = r.get("test") or (r if "validation" not in r else {})
        ts = r.get("train_seconds")
        lines.append(
            f"{r['dataset']:8} {r['protocol']:16} {r['model']:24} {_fmt(val.get(f'recall@{k}')):>9} "
            f"{_fmt(val.get(f'ndcg@{k}')):>9} {_fmt(test.get(f'recall@{k}')):>7} "
            f"{_ci_text(test.get(f'recall@{k}_ci') or test.get(f'recall@{k}_ci_users')):>15} "
            f"{_fmt(test.get(f'ndcg@{k}')):>7} "
            f"{_ci_text(test.get(f'ndcg@{k}_ci') or test.get(f'ndcg@{k}_ci_users')):>15} "
            f"{_fmt(test.get('mrr')):>7} {_fmt(test.get(f'coverage@{k}')):>7} "
            f"{_fmt(test.get(f'cold_recall@{k}')):>8} {_fmt(test.get('cold_ratio')):>7} "
            f"{len(r.get('seeds') or []) or '-':>5} {'-' if ts is None else f'{ts:.1f}':>8}"
        )
    return lines
