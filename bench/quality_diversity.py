"""Diversity by maximal marginal relevance: what each knob costs in accuracy, and the default chosen on validation.

    STREAMREC_TRAIN_THREADS=1 .venv/bin/python -m bench.quality_diversity [--dataset ml-100k] [--seeds 3] \
        [--knobs 0,0.1,...] [--pool 50] [--out bench/results/quality-diversity-ml-100k.json] \
        [--svg docs/quality-diversity.svg]

The stream re-ranks the scorer's candidates, so this measures that path: per seed, the served model
configuration (``harness.streamrec_config``) is trained once on the ``loo`` protocol's training data, its
epoch chosen on validation NDCG@10 as the harness chooses it, exported as an artifact and loaded as a
:class:`serving.scorer.Scorer`. For every validation case the scorer's top ``--pool`` (50) are the
candidates; :func:`serving.diversity.mmr_order` re-ranks them to 10 with the rows
:meth:`Scorer.item_vectors` gives, at each knob of ``--knobs``.

Per knob: Recall@10 and NDCG@10 (mean over seeds, 95% t-interval over seeds), and three measures that do
not come from the model's embedding (``model_export.evaluation.metrics``): intra-list diversity of the
genres (mean pairwise 1 - Jaccard), category coverage (a list's distinct genres over the catalogue's) and
novelty (mean -log2 of an item's share of the training interactions); and, for reference, the list's
mean cosine distance in the model's own embedding (what MMR spreads, and what the stream can log).

The default is chosen on validation by :data:`RULE` (:func:`choose`). Only then is the test split read,
once, for knob 0 and the chosen knob. Prints one table; writes the JSON (``--out``) and an SVG of NDCG@10
against genre diversity (``--svg``; ``--plot FILE`` redraws it from a result file without training).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import machine
from bench.results import RESULTS_DIR, human_output, publish
from model_export.artifact.export import export_artifact
from model_export.data.splits import Holdout, Split, holdout
from model_export.evaluation import harness
from model_export.evaluation.harness import EvalData, HarnessConfig, paired_test, prepare, seed_interval, user_bootstrap
from model_export.evaluation.metrics import beyond_accuracy, interaction_counts
from model_export.pipeline import describe_training_data
from model_export.train import train_split
from serving.diversity import intra_list_distance, mmr_order
from serving.scorer import Scorer
from streamrec.cli import configure_logging
from streamrec.config import CUTOFF, PROJECT_ROOT

# By name: run as `python -m bench.quality_diversity` this module is `__main__`, outside the "bench" logger.
log = logging.getLogger("bench.quality_diversity")

KNOBS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
# Candidates MMR re-ranks per user: the scorer's top 50.
POOL = 50
# The rule that picks the default on validation (see ``choose``).
MAX_RELATIVE_LOSS = 0.02
RULE = (
    f"the largest knob whose mean validation NDCG@10 over seeds, and that of every smaller knob, is at least "
    f"{1 - MAX_RELATIVE_LOSS:.0%} of knob 0's (a loss of at most {MAX_RELATIVE_LOSS:.0%})"
)
SVG_PATH = PROJECT_ROOT / "docs" / "quality-diversity.svg"


@dataclass(frozen=True)
class Pools:
    """Each case's candidates from the scorer, best first, with the rows MMR compares them by.

    Attributes:
        ids: Candidate item ids per case (at most the pool size; fewer when fewer are recommendable).
        scores: Their scores per case, float64 (n,).
        vectors: Their item rows per case, float32 (n, d).
        targets: Each case's held-out item.
        users: Each case's user (for the bootstrap over users).
    """

    ids: list[list[str]]
    scores: list[np.ndarray]
    vectors: list[np.ndarray]
    targets: list[str]
    users: list[str]


def candidate_pools(scorer: Scorer, split: Split, pool: int) -> Pools:
    """The scorer's top ``pool`` for every case of ``split``, as the stream would score the user then.

    A case's history is the user's items before the target, with their times and scenarios; the scorer
    excludes them, as the harness does.
    """
    hist = [split.sequences[u][:t] for u, t in split.cases]
    times = [split.times[u][:t] for u, t in split.cases]
    scen: list[Sequence[str | None]] = [split.scenarios[u][:t] if split.scenarios.get(u) else [None] * t
                                        for u, t in split.cases]
    recs = scorer.score(hist, k=pool, times=times, scenarios=scen)
    ids = [[i for i, _ in r] for r in recs]
    return Pools(
        ids,
        [np.array([s for _, s in r], dtype=np.float64) for r in recs],
        [scorer.item_vectors(x) for x in ids],
        [split.sequences[u][t] for u, t in split.cases],
        [u for u, _ in split.cases],
    )


def rerank(pools: Pools, knob: float, k: int) -> tuple[list[list[str]], list[list[int]], float]:
    """Every case's list of ``k`` at one knob: item ids, their positions in the pool, and seconds per list."""
    lists, picks = [], []
    t0 = time.perf_counter()
    for ids, scores, vectors in zip(pools.ids, pools.scores, pools.vectors, strict=True):
        order = mmr_order(scores, vectors, k, knob)
        picks.append(order)
        lists.append([ids[i] for i in order])
    return lists, picks, (time.perf_counter() - t0) / max(len(lists), 1)


def case_gains(lists: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> dict[str, np.ndarray]:
    """Per-case Recall@k (hit) and NDCG@k of each list (of at most k) against its one target, float64 (C,) each."""
    rank = np.array([x.index(t) if t in x else -1 for x, t in zip(lists, targets, strict=True)], dtype=np.int64)
    hit = rank >= 0
    ndcg = np.where(hit, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    return {f"recall@{k}": hit.astype(np.float64), f"ndcg@{k}": ndcg}


@dataclass(frozen=True)
class Catalogue:
    """What the offline diversity measures read: genres by item, the catalogue's genre count, training counts."""

    genres: Mapping[str, Sequence[str]]
    n_genres: int
    counts: Mapping[str, int]

    @classmethod
    def of(cls, data: EvalData, ho: Holdout) -> Catalogue:
        """The genres of the ranked items (the index) and their interactions in the models' training data."""
        genres = {i: [str(g) for g in (data.catalog.get(i) or {}).get("categories") or []] for i in data.index}
        return cls(genres, len({g for gs in genres.values() for g in gs}), interaction_counts(ho.train))


def measure(pools: Pools, knob: float, k: int, cat: Catalogue) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One seed's metrics at one knob, and its per-case gains (for intervals over users and paired tests)."""
    lists, picks, per_list = rerank(pools, knob, k)
    gains = case_gains(lists, pools.targets, k)
    emb = [intra_list_distance(v[p]) for v, p in zip(pools.vectors, picks, strict=True) if len(p) > 1]
    m: dict[str, Any] = {key: float(g.mean()) for key, g in gains.items()}
    m |= beyond_accuracy(lists, cat.genres, cat.n_genres, cat.counts)
    m |= {"ild_embedding": float(np.mean(emb)) if emb else None, "cases": len(lists),
          "mmr_us_per_list": round(per_list * 1e6, 1),
          # Knob 0 must leave the scorer's own order: the plain top k.
          "same_as_top_k": all(x == ids[:k] for x, ids in zip(lists, pools.ids, strict=True))}
    return m, gains


MEAN_KEYS: tuple[str, ...] = (
    "recall@{k}", "ndcg@{k}", "ild_genres", "category_coverage", "novelty", "ild_embedding", "mmr_us_per_list",
)


def over_seeds(runs: Sequence[Mapping[str, Any]], k: int) -> dict[str, Any]:
    """Means over seeds; Recall@k and NDCG@k with a 95% t-interval over seeds (``seed_interval``, as the harness)."""
    out: dict[str, Any] = {}
    for key in (m.format(k=k) for m in MEAN_KEYS):
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
        if key in (f"recall@{k}", f"ndcg@{k}"):
            out[f"{key}_ci"] = seed_interval(vals)
    out["same_as_top_k"] = all(r["same_as_top_k"] for r in runs)
    return out


def choose(validation: Mapping[float, Mapping[str, Any]], k: int = CUTOFF,
           max_loss: float = MAX_RELATIVE_LOSS) -> float:
    """The default knob by :data:`RULE`: the largest knob before the first one that loses more than ``max_loss``.

    Every smaller knob has to pass too, so a noisy pass above a clear failure is not taken. Knob 0 is the
    reference and always passes.
    """
    base = validation[0.0][f"ndcg@{k}"]
    chosen = 0.0
    for knob in sorted(validation):
        if validation[knob][f"ndcg@{k}"] < (1.0 - max_loss) * base:
            break
        chosen = knob
    return chosen


def train_served(
    data: EvalData, ho: Holdout, cfg: HarnessConfig, seed: int, workdir: Path
) -> tuple[Scorer, dict[str, Any]]:
    """The served configuration trained on ``ho.train`` (epoch chosen on validation), exported and loaded."""
    t0 = time.perf_counter()
    # The harness's own epoch choice (validation NDCG@k), so this model is the one the harness measures.
    select = harness._validation_score("streamrec", ho.validation, data.index, cfg)
    trained = train_split(ho.validation, harness.streamrec_config(cfg), seed, items=data.index,
                          catalog=data.catalog, select=select)
    train_s = time.perf_counter() - t0
    path = export_artifact(
        trained.model, trained.items, workdir / f"seed-{seed}", version=f"diversity-seed-{seed}", metrics={},
        train_data=describe_training_data(ho.validation, data.name), scenarios=trained.scenarios,
    )
    scorer = Scorer(path, prefer_gpu=False)
    best = max((s for _, s in trained.validation_curve), default=None)
    info = {"seed": seed, "selected_epoch": trained.selected_epoch, "epochs_run": trained.epochs_run,
            "train_seconds": round(train_s, 1), f"harness_validation_ndcg@{cfg.k}": best,
            "dim": scorer.contract.embedding_dim}
    return scorer, info


def sweep(
    data: EvalData, cfg: HarnessConfig, knobs: Sequence[float], pool: int, workdir: Path, *, test: bool = True
) -> dict[str, Any]:
    """The bench's core: per seed train and sweep ``knobs`` on validation; choose; then (``test``) read the test once.

    Returns:
        ``{"validation": {knob: metrics}, "chosen", "test": {knob: metrics} (knob 0 and the chosen one; None
        without ``test``), "paired": chosen vs 0 on validation (and test), "per_seed": [...]}``, knobs as
        strings.
    """
    if 0.0 not in knobs:
        raise ValueError("the knobs must include 0 (the plain top 10, the reference of the rule)")
    k = cfg.k
    knobs = sorted(set(knobs))
    ho = holdout(data.events, "loo")
    cat = Catalogue.of(data, ho)
    seeds = list(range(cfg.seed, cfg.seed + max(cfg.seeds, 1)))
    log.info(f"[{data.name} loo] {len(ho.validation.cases)} validation cases, {len(data.index)} items, "
             f"{cat.n_genres} genres; seeds {seeds}, knobs {knobs}, pool {pool}")
    per_seed: list[dict[str, Any]] = []
    val_runs: dict[float, list[dict[str, Any]]] = {x: [] for x in knobs}
    val_gains: dict[float, list[dict[str, np.ndarray]]] = {x: [] for x in knobs}
    scorers: list[Scorer] = []
    for seed in seeds:
        log.info(f"[{data.name} loo] seed {seed}: train the served configuration, export, load")
        scorer, info = train_served(data, ho, cfg, seed, workdir)
        scorers.append(scorer)
        pools = candidate_pools(scorer, ho.validation, pool)
        info["validation"] = {}
        for knob in knobs:
            m, g = measure(pools, knob, k, cat)
            val_runs[knob].append(m)
            val_gains[knob].append(g)
            info["validation"][str(knob)] = m
        log.info(f"[{data.name} loo] seed {seed}: epoch {info['selected_epoch']}, " + ", ".join(
            f"{x}: N@{k} {info['validation'][str(x)][f'ndcg@{k}']:.4f}" for x in knobs))
        per_seed.append(info)
    validation = {x: over_seeds(val_runs[x], k) for x in knobs}
    chosen = choose(validation, k)
    log.info(f"[{data.name} loo] chosen on validation: {chosen} ({RULE})")
    users = [u for u, _ in ho.validation.cases]
    paired = {"validation": _paired(val_gains, chosen, users, k)}
    test_out: dict[str, Any] | None = None
    if test:
        # The test split, read once: knob 0 and the chosen knob only, on the same models.
        test_knobs = sorted({0.0, chosen})
        test_runs: dict[float, list[dict[str, Any]]] = {x: [] for x in test_knobs}
        test_gains: dict[float, list[dict[str, np.ndarray]]] = {x: [] for x in test_knobs}
        for scorer, info in zip(scorers, per_seed, strict=True):
            pools = candidate_pools(scorer, ho.test, pool)
            info["test"] = {}
            for knob in test_knobs:
                m, g = measure(pools, knob, k, cat)
                test_runs[knob].append(m)
                test_gains[knob].append(g)
                info["test"][str(knob)] = m
        test_users = [u for u, _ in ho.test.cases]
        test_out = {}
        for knob in test_knobs:
            entry = over_seeds(test_runs[knob], k)
            for metric in (f"recall@{k}", f"ndcg@{k}"):
                entry[f"{metric}_ci_users"] = user_bootstrap(np.mean([g[metric] for g in test_gains[knob]], axis=0),
                                                             test_users)
            test_out[str(knob)] = entry
        paired["test"] = _paired(test_gains, chosen, test_users, k)
    return {
        "validation_cases": len(ho.validation.cases), "test_cases": len(ho.test.cases) if test else None,
        "items": len(data.index), "genres": cat.n_genres, "knobs": knobs, "pool": pool, "k": k, "rule": RULE,
        "chosen": chosen, "validation": {str(x): v for x, v in validation.items()}, "test": test_out,
        "read_test": test, "test_knobs": sorted({0.0, chosen}) if test else [], "paired": paired,
        "per_seed": per_seed,
    }


def _paired(
    gains: Mapping[float, list[dict[str, np.ndarray]]], chosen: float, users: Sequence[str], k: int
) -> dict[str, Any] | None:
    """The chosen knob against knob 0 on the same cases (seed-averaged), by the harness's paired bootstrap."""
    if chosen == 0.0:
        return None
    return {
        metric: paired_test(np.mean([g[metric] for g in gains[chosen]], axis=0),
                            np.mean([g[metric] for g in gains[0.0]], axis=0), users)
        for metric in (f"recall@{k}", f"ndcg@{k}")
    }


def mmr_timing(n: int = POOL, k: int = CUTOFF, d: int = 64, lists: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Wall time of one :func:`mmr_order` call (a list of k from n candidates of dimension d), per knob > 0."""
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.normal(size=(lists, n)))[:, ::-1].copy()
    vectors = rng.normal(size=(lists, n, d)).astype(np.float32)
    out: dict[str, Any] = {"n": n, "k": k, "d": d, "lists": lists}
    for knob in (0.0, 0.3):
        took = np.empty(lists)
        for b in range(lists):
            t0 = time.perf_counter()
            mmr_order(scores[b], vectors[b], k, knob)
            took[b] = time.perf_counter() - t0
        out[f"knob_{knob}"] = {"median_us": round(float(np.median(took)) * 1e6, 1),
                               "p99_us": round(float(np.percentile(took, 99)) * 1e6, 1)}
    return out


def table(doc: Mapping[str, Any]) -> list[str]:
    """The printed table: validation per knob, then the test rows."""
    k = doc["k"]

    def ci(x: Sequence[float] | None) -> str:
        return f"[{x[0]:.4f}, {x[1]:.4f}]" if x else "-"

    def num(x: float | None, digits: int = 4) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    head = (f"{'split':10} {'knob':>5} {f'R@{k}':>7} {'95% CI (seeds)':>18} {f'N@{k}':>7} {'95% CI (seeds)':>18} "
            f"{'ILD':>6} {'cov':>6} {'novelty':>7} {'ILD emb':>7}")
    lines = [head, "-" * len(head)]
    for split in ("validation", "test"):
        for knob, m in (doc[split] or {}).items():
            lines.append(
                f"{split:10} {knob:>5} {num(m[f'recall@{k}']):>7} {ci(m[f'recall@{k}_ci']):>18} "
                f"{num(m[f'ndcg@{k}']):>7} {ci(m[f'ndcg@{k}_ci']):>18} {num(m['ild_genres'], 3):>6} "
                f"{num(m['category_coverage'], 3):>6} {num(m['novelty'], 2):>7} {num(m['ild_embedding'], 3):>7}"
            )
    lines.append(f"chosen: {doc['chosen']} ({doc['rule']})")
    return lines


def svg(validation: Mapping[str, Mapping[str, Any]], chosen: float, k: int = CUTOFF) -> str:
    """An SVG of the trade-off: validation NDCG@k against genre ILD, one labelled point per knob."""
    pts = [(float(knob), m["ild_genres"], m[f"ndcg@{k}"]) for knob, m in validation.items()]
    w, h, left, right, top, bottom = 640, 400, 70, 30, 40, 55
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]

    def span(v: list[float]) -> tuple[float, float]:
        lo, hi = min(v), max(v)
        pad = (hi - lo) * 0.08 or 0.01
        return lo - pad, hi + pad

    floor = (1.0 - MAX_RELATIVE_LOSS) * validation["0.0"][f"ndcg@{k}"]  # the rule's threshold
    (x0, x1), (y0, y1) = span(xs), span([*ys, floor])

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">'
        f"MMR on ML-100k loo validation: NDCG@{k} against genre diversity (labels: the knob)</text>",
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
    ]
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts += [
            f'<line x1="{px(xv):.1f}" y1="{h - bottom}" x2="{px(xv):.1f}" y2="{h - bottom + 5}" stroke="black"/>',
            f'<text x="{px(xv):.1f}" y="{h - bottom + 18}" text-anchor="middle">{xv:.3f}</text>',
            f'<line x1="{left - 5}" y1="{py(yv):.1f}" x2="{left}" y2="{py(yv):.1f}" stroke="black"/>',
            f'<text x="{left - 8}" y="{py(yv) + 4:.1f}" text-anchor="end">{yv:.4f}</text>',
        ]
    parts += [
        f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">'
        "intra-list diversity of genres (mean pairwise 1 - Jaccard)</text>",
        f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + h - bottom) / 2})">validation NDCG@{k} (mean of seeds)</text>',
        f'<line x1="{left}" y1="{py(floor):.1f}" x2="{w - right}" y2="{py(floor):.1f}" stroke="grey" '
        'stroke-dasharray="5,4"/>',
        f'<text x="{w - right - 4}" y="{py(floor) - 5:.1f}" text-anchor="end" fill="grey">'
        f"the rule: {1 - MAX_RELATIVE_LOSS:.0%} of knob 0's NDCG@{k}</text>",
        '<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="'
        + " ".join(f"{px(x):.1f},{py(y):.1f}" for _, x, y in sorted(pts)) + '"/>',
    ]
    for n, (knob, x, y) in enumerate(sorted(pts)):
        colour = "#d62728" if knob == chosen else "#1f77b4"
        label = escape(f"{knob:g}" + (" (chosen)" if knob == chosen else ""))
        dy = -8 if n % 2 == 0 else 18  # neighbouring knobs lie close together: labels above and below in turn
        parts += [
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colour}"/>',
            f'<text x="{px(x):.1f}" y="{py(y) + dy:.1f}" text-anchor="middle" fill="{colour}">{label}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the JSON to stdout (the table goes to stderr)")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--knobs", default=",".join(f"{x:g}" for x in KNOBS), help="comma-separated, 0 among them")
    p.add_argument("--pool", type=int, default=POOL, help="candidates per user from the scorer")
    p.add_argument("--epochs", type=int, help="training epochs (default: the served configuration's)")
    p.add_argument("--max-seconds", type=float, help="stop each training after this many seconds")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a training setting (as streamrec eval --set), e.g. model.text=false")
    p.add_argument("--validation-only", action="store_true", help="choose the knob, read no test case")
    p.add_argument("--out", type=Path, help="result file (default bench/results/quality-diversity-<dataset>.json)")
    p.add_argument("--svg", type=Path, default=SVG_PATH,
                   help=f"the plot (default {SVG_PATH.relative_to(PROJECT_ROOT)})")
    p.add_argument("--plot", type=Path, metavar="FILE",
                   help="only redraw the SVG (--svg) from an earlier result file of this bench (no training)")
    args = p.parse_args(argv)
    configure_logging()
    if args.plot is not None:
        earlier = json.loads(args.plot.read_text())
        args.svg.write_text(svg(earlier["validation"], earlier["chosen"], earlier["k"]))
        log.info(f"wrote {args.svg}")
        return dict(earlier)
    knobs = [float(x) for x in args.knobs.split(",") if x]
    overrides = tuple((key, raw) for key, _, raw in (s.partition("=") for s in args.set))
    if any("=" not in s for s in args.set) or 0.0 not in knobs or not all(0.0 <= x <= 1.0 for x in knobs):
        p.error("--set takes KEY=JSON; --knobs must lie in [0, 1] and include 0")
    cfg = HarnessConfig(seeds=args.seeds, epochs=args.epochs, max_seconds=args.max_seconds,
                        train_overrides=overrides)
    started, t0 = datetime.now(UTC), time.perf_counter()
    with human_output(args.json):
        data = prepare(args.dataset, cfg.core)
        with tempfile.TemporaryDirectory(prefix="streamrec-diversity-") as tmp:
            result = sweep(data, cfg, knobs, args.pool, Path(tmp), test=not args.validation_only)
        timing = mmr_timing(d=result["per_seed"][0]["dim"])
        doc: dict[str, Any] = {
            "benchmark": "quality_diversity", "dataset": args.dataset, "protocol": "loo",
            "started_at": started.isoformat(), "seconds": round(time.perf_counter() - t0, 1),
            "seeds": list(range(cfg.seed, cfg.seed + cfg.seeds)), "machine": machine("cpu"), **result,
            "mmr_timing": timing, "settings": harness.settings(cfg),
        }
        print("\n".join(table(doc)))
        print(f"mmr_order, a list of {timing['k']} from {timing['n']} at d={timing['d']}: median "
              f"{timing['knob_0.3']['median_us']} us, p99 {timing['knob_0.3']['p99_us']} us (knob 0.3)")
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(svg(doc["validation"], doc["chosen"], cfg.k))
        log.info(f"wrote {args.svg}")
    publish("quality-diversity", doc, as_json=args.json,
            out=args.out or RESULTS_DIR / f"quality-diversity-{args.dataset}.json")
    return doc


if __name__ == "__main__":
    main()
