"""How much the order of equal timestamps changes the ML-1M leave-one-out benchmark, side by side.

    .venv/bin/python -m bench.quality_ties [--dataset ml-1m] [--models popularity,itemknn] [--core 5]

The HSTU repositories order each user's ratings with pandas' default (unstable) quicksort by timestamp; SASRec's
and the eSASRec benchmark's preprocessing keep the file's order for equal timestamps (``--ties`` of the
harness). For both orders this prints how many users' test and validation targets differ, and the harness's
figures of the given (cheap) models on each, so that published rows can be read against ours like for like.

Writes ``bench/results/quality-ties-<dataset>.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from bench.quality import machine
from bench.results import RESULTS_DIR, publish
from model_export.data.splits import loo_holdout
from model_export.evaluation.harness import TIES, HarnessConfig, evaluate_models, prepare
from streamrec.cli import configure_logging


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--models", default="popularity,itemknn")
    p.add_argument("--core", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    configure_logging()
    stream = sys.stderr if args.json else sys.stdout
    t0 = time.perf_counter()
    targets: dict[str, dict[str, dict[str, str]]] = {}
    rows: list[dict[str, Any]] = []
    for ties in TIES:
        with contextlib.redirect_stdout(stream):
            data = prepare(args.dataset, args.core, ties)
            ho = loo_holdout(data.events)
            targets[ties] = {
                "test": {u: ho.test.sequences[u][t] for u, t in ho.test.cases},
                "validation": {u: ho.validation.sequences[u][t] for u, t in ho.validation.cases},
            }
            out = evaluate_models(data, "loo", [m for m in args.models.split(",") if m],
                                  HarnessConfig(core=args.core, cold_fraction=0.0, ties=ties))
        for name, entry in out["models"].items():
            rows.append({"ties": ties, "model": name, "items": out["items"],
                         "validation": entry["validation"], "test": entry["test"]})
    changed = {
        split: sum(targets["file"][split][u] != targets["quicksort"][split].get(u) for u in targets["file"][split])
        for split in ("test", "validation")
    }
    users = len(targets["file"]["test"])
    lines = [f"{args.dataset} {args.core}-core, {users} users: targets that differ between the two tie orders: "
             f"test {changed['test']} ({changed['test'] / users:.1%}), validation {changed['validation']} "
             f"({changed['validation'] / users:.1%})",
             f"{'ties':10} {'model':12} {'val R@10':>9} {'val N@10':>9} {'R@10':>7} {'N@10':>7}"]
    for r in rows:
        v, t = r["validation"], r["test"]
        lines.append(f"{r['ties']:10} {r['model']:12} {v['recall@10']:>9.4f} {v['ndcg@10']:>9.4f} "
                     f"{t['recall@10']:>7.4f} {t['ndcg@10']:>7.4f}")
    print("\n".join(lines), file=stream)
    doc = {"benchmark": "quality_ties", "dataset": args.dataset, "core": args.core, "users": users,
           "changed_targets": changed, "changed_share": {k: v / users for k, v in changed.items()},
           "rows": rows, "seconds": round(time.perf_counter() - t0, 1), "machine": machine("cpu")}
    publish("quality-ties", doc, as_json=args.json, out=args.out or RESULTS_DIR / f"quality-ties-{args.dataset}.json")
    return doc


if __name__ == "__main__":
    main()
