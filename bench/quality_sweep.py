"""Choices of our model's training, made on validation data only: one harness run per variant, no test case read.

    .venv/bin/python -m bench.quality_sweep [--dataset ml-100k] [--protocols loo,time] [--seeds 1] \
        [--variants default,constant-lr,...] [--out bench/results/quality-sweep-ml100k.json]

Each variant overrides training settings of ``streamrec`` (``VARIANTS``; the same keys as ``--set`` of
``streamrec eval``) and is measured by the harness with ``HarnessConfig.test=False``: the validation split
of each protocol only (``loo``: each user's second-to-last item; ``time``: the 10% of events before the test
period). ``ranking`` lists, per protocol, the variants run on it from the best validation NDCG@10 down.

Prints one table; writes ``bench/results/quality-sweep-<dataset>.json`` (``--out``): every variant's
validation metrics per protocol and seed, its chosen epoch, and the ranking.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.quality import machine
from bench.results import RESULTS_DIR, publish
from model_export.evaluation.harness import HarnessConfig, evaluate_models, prepare, settings
from streamrec.cli import configure_logging
from streamrec.config import CUTOFF

# name -> (overrides of TrainConfig as KEY=JSON, protocols it is measured on). Cold exposure only matters
# where validation has new items (``time``); under ``loo`` every validation target has training events.
VARIANTS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "default": ((), ("loo", "time")),
    "constant-lr": ((("lr_decay", "false"),), ("loo", "time")),
    "lr-1e-3": ((("lr", "0.001"),), ("loo", "time")),
    "history-200": ((("model.max_len", "200"),), ("loo", "time")),
    "sampled-softmax-256": ((("negatives", "256"),), ("loo", "time")),
    "no-id-dropout": ((("model.id_dropout", "0.0"),), ("loo", "time")),
    "dropout-0.1": ((("model.dropout", "0.1"),), ("loo", "time")),
    "dropout-0.3": ((("model.dropout", "0.3"),), ("loo", "time")),
    "epochs-60": ((("epochs", "60"),), ("loo", "time")),
    "cold-exposure-0": ((("cold_exposure", "0.0"),), ("time",)),
    "cold-exposure-0.25": ((("cold_exposure", "0.25"),), ("time",)),
    "cold-exposure-0.5": ((("cold_exposure", "0.5"),), ("time",)),
    "cold-exposure-2": ((("cold_exposure", "2.0"),), ("time",)),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the JSON to stdout (the table goes to stderr)")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--protocols", default="loo,time")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {','.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, help="epochs of every variant that does not set its own")
    p.add_argument("--out", type=Path, help="result file (default bench/results/quality-sweep-<dataset>.json)")
    p.add_argument("--rerank", type=Path, metavar="FILE",
                   help="recompute the ranking of an earlier sweep's result file (no training), in place")
    args = p.parse_args(argv)
    configure_logging()
    if args.rerank is not None:
        return _rerank(args.rerank)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; use some of {','.join(VARIANTS)}")
    protocols = [x for x in args.protocols.split(",") if x]
    stream = sys.stderr if args.json else sys.stdout
    started, t_start = datetime.now(UTC), time.perf_counter()
    with contextlib.redirect_stdout(stream):
        data = prepare(args.dataset, 5)
    k = CUTOFF
    out = args.out or RESULTS_DIR / f"quality-sweep-{args.dataset}.json"
    results: dict[str, Any] = {}
    for name in names:
        overrides, on = VARIANTS[name]
        cfg = HarnessConfig(seeds=args.seeds, epochs=args.epochs, train_overrides=overrides, test=False)
        per: dict[str, Any] = {}
        for protocol in [x for x in protocols if x in on]:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(stream):
                entry = evaluate_models(data, protocol, ["streamrec"], cfg)["models"]["streamrec"]
            per[protocol] = {
                "validation": entry["validation"],
                "selected_epochs": [r["selected_epoch"] for r in entry["per_seed"]],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        results[name] = {"overrides": [f"{a}={b}" for a, b in overrides], "protocols": per,
                         "settings": settings(cfg)["streamrec"]}
        # Written after every variant: a sweep cut short still leaves what it measured.
        publish("quality-sweep", _document(args, started, t_start, results, complete=False), as_json=False,
                out=out)
    ranking = rank_variants(results, protocols, k)
    head = f"{'variant':22} " + " ".join(f"{x + ' val R@10':>14} {x + ' val N@10':>14} {'epoch':>6}" for x in protocols)
    lines = [head, "-" * len(head)]
    for name in ranking[protocols[0]] + [n for n in results if n not in ranking[protocols[0]]]:
        cells = []
        for x in protocols:
            got = results[name]["protocols"].get(x)
            if got is None:
                cells.append(f"{'-':>14} {'-':>14} {'-':>6}")
                continue
            v = got["validation"]
            cells.append(f"{v[f'recall@{k}']:>14.4f} {v[f'ndcg@{k}']:>14.4f} {str(got['selected_epochs'][0]):>6}")
        lines.append(f"{name:22} " + " ".join(cells))
    print("\n".join(lines), file=stream)
    doc = {**_document(args, started, t_start, results, complete=True), "ranking": ranking}
    publish("quality-sweep", doc, as_json=args.json, out=out)
    return doc


def _rerank(path: Path) -> dict[str, Any]:
    """An earlier result file with its ranking recomputed; its ``produced_by`` moves to ``measured_by``."""
    doc = json.loads(path.read_text())
    protocols = sorted({x for v in doc["variants"].values() for x in v["protocols"]})
    for v in doc["variants"].values():
        v.pop(f"mean_validation_ndcg@{CUTOFF}", None)
    doc |= {"ranking": rank_variants(doc["variants"], protocols), "measured_by": doc.pop("produced_by", None)}
    publish("quality-sweep", doc, as_json=False, out=path)
    return doc


def rank_variants(results: dict[str, Any], protocols: list[str], k: int = CUTOFF) -> dict[str, list[str]]:
    """Per protocol, the variants measured on it from the best validation NDCG@k down.

    Per protocol, because variants that only matter under one protocol are measured on that one alone.
    """
    return {
        x: sorted((n for n in results if x in results[n]["protocols"]),
                  key=lambda n: -results[n]["protocols"][x]["validation"][f"ndcg@{k}"])
        for x in protocols
    }


def _document(
    args: argparse.Namespace, started: datetime, t_start: float, results: dict[str, Any], complete: bool
) -> dict[str, Any]:
    return {
        "benchmark": "quality_sweep", "dataset": args.dataset, "started_at": started.isoformat(),
        "seconds": round(time.perf_counter() - t_start, 1), "seeds": list(range(args.seeds)),
        "read_test": False, "machine": machine("cpu"), "variants": results, "complete": complete,
    }


if __name__ == "__main__":
    main()
