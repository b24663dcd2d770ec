"""Cold items' rows from their text: a projection on frozen MiniLM vs LoRA + projection vs ridge; and encoder speed.

    .venv/bin/streamrec bench text_adapter [--json] [-- --quick]   # or: .venv/bin/python -m bench.text_adapter

Why: a brand-new item gets its row in the item table from its text (``model_export/cold_start.py``: ridge
on frozen all-MiniLM-L6-v2 vectors). Is adapting the encoder itself worth it? Both parameter-efficient
ways are measured on the same task, seeds and budget:

* ``projection``: a trained head (:data:`HEADS`) on the frozen encoder's vectors (computed once);
* ``lora``: LoRA adapters (rank 8, alpha 16, written out here: ``W x + (alpha / r) B A x``, B = 0 at the
  start, base weights frozen) on the query/value Linear layers of the 6 BERT layers (``--lora-targets``
  adds ``dense`` ones), plus the same head, trained end to end through the encoder;
* ``ridge``: :func:`model_export.cold_start.ridge_predict` on the frozen vectors (closed form);
* references: ``mean row`` (no text at all) and ``learned`` (the rows the model learned: the ceiling).

Task (ML-100k): an id-only SASRec (``model_export.train.train``, ``--epochs``) on the leave-one-out
training data. Per seed, a random ``--cold-fraction`` of its items is "cold": the text -> row mapping is
fitted on the other items' (text, learned row) pairs, the cold items' rows are replaced by their predicted
rows (in the tied table, so a cold item in a history reads its predicted row too), and the LOO test cases
are scored by full ranking, seen items excluded (``model_export.evaluation.metrics.evaluate``), split by whether the
target is cold; ``all`` is every case (a cold row that outscores everything helps cold cases and hurts the
others: judge an arm by ``all`` as much as by ``cold``). Loss of both trained arms: cross-entropy of the
dot products between each predicted row and all fitted items' learned rows (temperature ``--tau``; the
right row is the class) plus ``--mse-weight`` x the squared error relative to the rows' mean squared norm.
Dot products, not cosines: the norm of a row is half of every score it gets, and a cosine loss leaves it
to the MSE, which shrinks it toward the mean (so cold rows never reach a top 10). AdamW, ``--fit-epochs``
epochs of ``--fit-batch`` items, the same for both arms (LoRA batches are length-bucketed to pad little).

Encoder speed (``serving.text_encoder.TextEncoder``, the stream's path: tokenizers + onnxruntime on CPU) on
ML-1M titles (``item_text`` of its 3,883 movies): items/s at batch 64 and batch 1, and the latency of
encoding one new item (median, p90, p99); the torch path (``model_export.text_embedding``) beside it; the
export (or cache hit) time and file size.

Prints a table; writes ``bench/results/text_adapter.json`` (``--quick``: ``text_adapter-quick.json``). The
machine is often shared: compare rows of one run (the load average at the start and end is in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.results import publish, result_path
from model_export.artifact.export import TEXT_ENCODER_CACHE
from model_export.artifact.text_encoder import cached_text_encoder, sentence_embedding
from model_export.cold_start import MAX_FIT_ITEMS, ridge_predict
from model_export.data.datasets import dataset_dir, load_dataset
from model_export.data.splits import make_split
from model_export.evaluation.metrics import evaluate
from model_export.features import TEXT_DIM, encoder_dir
from model_export.model import PAD, SASRec
from model_export.text_embedding import text_encoder
from model_export.train import TrainConfig, TrainedModel, train
from serving.text_encoder import TextEncoder, load_tokenizer
from streamrec.cli import configure_logging
from streamrec.events import item_text

HEADS = ("linear", "mlp")
K = 10
RIDGE_TOP = f"ridge (top {MAX_FIT_ITEMS} warm)"  # the trainer's rule: fit on the most-seen items only
METRICS = ("cold_recall@10", "cold_ndcg@10", "cold_recall@50", "cold_mrr", "warm_recall@10", "warm_ndcg@10",
           "all_recall@10", "all_ndcg@10", "cosine", "norm", "fit_s")
ARMS = ("learned (ceiling)", "mean row (no text)", "ridge", RIDGE_TOP, "projection", "lora + projection")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * x A^T B^T``: the frozen Linear plus a trainable rank-r update (B = 0 at init)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r): the update starts at 0
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)  # as nn.Linear (and the LoRA paper's code) inits A
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale  # (..., out)


def add_lora(bert: nn.Module, targets: Sequence[str], rank: int, alpha: float) -> list[nn.Parameter]:
    """Freeze ``bert`` and wrap every Linear whose attribute name is in ``targets`` (e.g. query, value).

    Returns:
        The trainable LoRA parameters.
    """
    for p in bert.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for module in list(bert.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha))
                wrapped += 1
    if not wrapped:
        msg = f"no Linear layer named {list(targets)} in the encoder"
        raise ValueError(msg)
    return [p for p in bert.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------------- fitting


def make_head(kind: str, d_out: int) -> nn.Module:
    """The projection 384 -> d: ``linear``, or ``mlp`` (384 -> 256 -> d, GELU, dropout 0.1)."""
    if kind == "linear":
        return nn.Linear(TEXT_DIM, d_out)
    return nn.Sequential(nn.Linear(TEXT_DIM, 256), nn.GELU(), nn.Dropout(0.1), nn.Linear(256, d_out))


@dataclass(frozen=True)
class FitConfig:
    """Budget and loss of the two trained arms (the same for both)."""

    head: str = "linear"
    epochs: int = 8
    batch: int = 64
    lr: float = 3e-3
    lora_lr: float = 1e-3
    weight_decay: float = 0.0
    tau: float = 0.1
    mse_weight: float = 1.0
    rank: int = 8
    alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("query", "value")


def _loss(pred: torch.Tensor, idx: torch.Tensor, y: torch.Tensor, cfg: FitConfig, y_sq: float) -> torch.Tensor:
    """Softmax of dot products with all fitted rows (the right row is the class) + relative MSE.

    Dot products, not cosines: the row's norm is half of every score it gets (u . row), and a cosine loss
    leaves it to the MSE alone, which shrinks it toward the mean (ridge's rows are ~0.57x the learned norm).
    """
    logits = pred @ y.T / cfg.tau  # (B, n_fit)
    mse = ((pred - y[idx]) ** 2).sum(-1).mean() / y_sq
    return F.cross_entropy(logits, idx) + cfg.mse_weight * mse


def _batches(n: int, size: int, rng: np.random.Generator, lengths: Sequence[int] | None = None) -> list[np.ndarray]:
    """Shuffled index batches; with ``lengths``, each batch holds texts of similar token counts."""
    order = rng.permutation(n)
    if lengths is None:
        return [order[s : s + size] for s in range(0, n, size)]
    order = order[np.argsort([lengths[i] for i in order], kind="stable")]
    chunks = [order[s : s + size] for s in range(0, n, size)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def _pad(ids: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(ids), width), dtype=torch.long)  # (B, T)
    for b, x in enumerate(ids):
        input_ids[b, : len(x)] = torch.tensor(x)
        mask[b, : len(x)] = 1
    return input_ids, mask


@dataclass
class ArmResult:
    """One arm's fit on one seed."""

    rows: np.ndarray | None  # (m, d) predicted rows of the cold items; None: the learned ones
    seconds: float
    trainable: int
    detail: dict[str, int]


def fit_projection(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, cfg: FitConfig, seed: int) -> ArmResult:
    """The head on frozen vectors: x (n, 384) -> y (n, d); predicts rows for x_new (m, 384)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = make_head(cfg.head, y.shape[1])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    y_sq = float((yt**2).sum(-1).mean())
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()
    head.train()
    for _ in range(cfg.epochs):
        for b in _batches(len(x), cfg.batch, rng):
            idx = torch.from_numpy(b)
            loss = _loss(head(xt[idx]), idx, yt, cfg, y_sq)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.eval()
    with torch.no_grad():
        rows = head(torch.from_numpy(x_new)).numpy()
    n = sum(p.numel() for p in head.parameters())
    return ArmResult(rows, time.perf_counter() - t0, n, {"head": n})


def fit_lora(
    bert: nn.Module, ids: Sequence[Sequence[int]], pad: int, y: np.ndarray, ids_new: Sequence[Sequence[int]],
    cfg: FitConfig, seed: int, progress: str,
) -> ArmResult:
    """LoRA on a copy of ``bert`` + the head, trained end to end on token ids -> y (n, d); predicts rows for ids_new."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    model = copy.deepcopy(bert)
    lora = add_lora(model, cfg.lora_targets, cfg.rank, cfg.alpha)
    head = make_head(cfg.head, y.shape[1])
    yt = torch.from_numpy(y)
    y_sq = float((yt**2).sum(-1).mean())
    opt = torch.optim.AdamW(
        [{"params": head.parameters(), "lr": cfg.lr}, {"params": lora, "lr": cfg.lora_lr}],
        weight_decay=cfg.weight_decay,
    )
    model.eval()  # the base stays deterministic (no dropout); only the adapters and the head learn
    head.train()
    lengths = [len(x) for x in ids]
    for epoch in range(1, cfg.epochs + 1):
        for b in _batches(len(ids), cfg.batch, rng, lengths):
            input_ids, mask = _pad([ids[i] for i in b], pad)
            idx = torch.from_numpy(b)
            loss = _loss(head(sentence_embedding(model, input_ids, mask)), idx, yt, cfg, y_sq)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log(f"    {progress} lora epoch {epoch}/{cfg.epochs}  loss {loss.item():.3f}  {time.perf_counter() - t0:.0f}s")
    head.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(ids_new), 128):
            input_ids, mask = _pad(ids_new[s : s + 128], pad)
            out.append(head(sentence_embedding(model, input_ids, mask)).numpy())
    n_lora, n_head = sum(p.numel() for p in lora), sum(p.numel() for p in head.parameters())
    rows = np.concatenate(out) if out else np.zeros((0, y.shape[1]), np.float32)
    return ArmResult(rows, time.perf_counter() - t0, n_lora + n_head, {"lora": n_lora, "head": n_head})


# ---------------------------------------------------------------------------------------- evaluation


def with_rows(trained: TrainedModel, rows: np.ndarray | None, cold_rows: np.ndarray) -> TrainedModel:
    """A copy of ``trained`` whose item-table rows ``cold_rows`` (1-based) are ``rows`` (None: unchanged)."""
    if rows is None:
        return trained
    model: SASRec = copy.deepcopy(trained.model)
    with torch.no_grad():
        model.item_emb.weight[torch.from_numpy(cold_rows)] = torch.from_numpy(rows.astype(np.float32))
        model.item_emb.weight[PAD].zero_()
    return replace(trained, model=model.eval())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).mean())


# ------------------------------------------------------------------------------------- encoder speed


def ml1m_texts() -> list[str]:
    """``item_text`` of ML-1M's 3,883 movies, read from the item file alone (the ratings are not needed)."""
    path = dataset_dir("ml-1m") / "ml-1m.item"
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":", 1)[0] for h in next(reader)]
        rows = [dict(zip(header, (c.rstrip("\r") for c in r), strict=True)) for r in reader if r]
    texts = []
    for r in rows:
        try:
            year: int | None = int(float(r["release_year"]))
        except ValueError:
            year = None
        record = {"title": r["movie_title"], "categories": r["genre"].split(), "attributes": {"year": year}}
        texts.append(item_text(record))
    return texts


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def encoder_speed(titles: Sequence[str], single: int, threads: int | None) -> dict[str, Any]:
    """Export (or cache hit), load, and encode speed of the stream's encoder, and the torch path beside it."""
    t0 = time.perf_counter()
    path = cached_text_encoder(TEXT_ENCODER_CACHE)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = TextEncoder(path, prefer_gpu=True, intra_op_threads=threads)
    load_s = time.perf_counter() - t0
    log(f"  encoder {path.name}: {path.stat().st_size / 1e6:.1f} MB, load {load_s:.2f}s on {enc.provider}")
    t0 = time.perf_counter()
    enc.encode(titles)
    batch64_s = time.perf_counter() - t0
    lat = []
    for t in titles[:single]:
        s = time.perf_counter()
        enc.encode([t])
        lat.append(time.perf_counter() - s)
    hf = text_encoder()
    hf._cache.clear()
    t0 = time.perf_counter()
    hf.encode(titles, batch_size=64)
    torch_s = time.perf_counter() - t0
    hf._cache.clear()
    return {
        "file": path.name,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "cached_text_encoder_s": round(export_s, 2),
        "load_s": round(load_s, 2),
        "provider": enc.provider,
        "intra_op_threads": threads,
        "titles": len(titles),
        "mean_tokens": round(float(np.mean([len(i) for i in load_tokenizer(encoder_dir())[0](titles)])), 1),
        "onnx_batch64_items_per_s": round(len(titles) / batch64_s, 1),
        "onnx_batch1_items_per_s": round(len(lat) / sum(lat), 1),
        "one_item_ms": {"p50": round(1e3 * _pct(lat, 50), 2), "p90": round(1e3 * _pct(lat, 90), 2),
                        "p99": round(1e3 * _pct(lat, 99), 2), "n": len(lat)},
        "torch_batch64_items_per_s": round(len(titles) / torch_s, 1),
    }


# ---------------------------------------------------------------------------------------------- main


def adaptation(args: argparse.Namespace, cfg: FitConfig) -> dict[str, Any]:
    ds = load_dataset("ml-100k")
    split = make_split(ds.events, "loo")
    log(f"  training the id-only SASRec on ML-100k LOO ({args.epochs} epochs)")
    with contextlib.redirect_stdout(sys.stderr):
        trained = train(split.train, TrainConfig(epochs=args.epochs), seed=0)
    items = trained.items
    texts_by_id = {str(r["item_id"]): item_text(r) for r in ds.items}
    texts = [texts_by_id.get(i, "") for i in items]
    learned = trained.model.item_matrix().detach().numpy()[1:].astype(np.float32)  # (N, d)
    counts: dict[str, int] = {}
    for seq in split.train.values():  # training interactions only: the held-out targets stay unseen
        for i in seq:
            counts[i] = counts.get(i, 0) + 1
    log(f"  {len(items)} items; frozen text vectors (onnxruntime)")
    x = TextEncoder(cached_text_encoder(TEXT_ENCODER_CACHE), intra_op_threads=args.threads).encode(texts)  # (N, 384)
    tokenize, pad = load_tokenizer(encoder_dir())
    ids = tokenize(texts)
    bert = text_encoder().model
    base = evaluate(trained.ranker(), split, items, K)
    log(f"  full model (no cold items): recall@10 {base['recall@10']:.4f} ndcg@10 {base['ndcg@10']:.4f}")

    per_seed: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        n = len(items)
        cold = np.sort(rng.choice(n, size=round(args.cold_fraction * n), replace=False))
        warm = np.setdiff1d(np.arange(n), cold)
        cold_ids = {items[i] for i in cold}
        cold_split = replace(split, cases=[(u, t) for u, t in split.cases if split.sequences[u][t] in cold_ids])
        warm_split = replace(split, cases=[(u, t) for u, t in split.cases if split.sequences[u][t] not in cold_ids])
        log(f"  seed {seed}: {len(cold)} cold items, {len(cold_split.cases)} cold / {len(warm_split.cases)} warm cases")
        for name in ARMS:
            if args.arms and not any(name.startswith(a) for a in args.arms):
                continue
            if name == "learned (ceiling)":
                res = ArmResult(None, 0.0, 0, {})
            elif name == "mean row (no text)":
                res = ArmResult(np.tile(learned[warm].mean(0), (len(cold), 1)), 0.0, 0, {})
            elif name == "ridge":
                res = _timed_ridge(x[warm], learned[warm], x[cold])
            elif name == RIDGE_TOP:
                top = sorted(warm, key=lambda i: -counts.get(items[i], 0))[:MAX_FIT_ITEMS]
                res = _timed_ridge(x[top], learned[top], x[cold])
            elif name == "projection":
                res = fit_projection(x[warm], learned[warm], x[cold], cfg, seed)
            else:
                warm_ids, cold_ids_ = [ids[i] for i in warm], [ids[i] for i in cold]
                res = fit_lora(bert, warm_ids, pad, learned[warm], cold_ids_, cfg, seed, f"seed {seed}")
            model = with_rows(trained, res.rows, cold + 1)
            m_cold = evaluate(model.ranker(), cold_split, items, K)
            m_cold50 = evaluate(model.ranker(), cold_split, items, 50)
            m_warm = evaluate(model.ranker(), warm_split, items, K)
            m_all = evaluate(model.ranker(), split, items, K)
            row = {
                "seed": seed,
                "cold_recall@10": m_cold["recall@10"],
                "cold_ndcg@10": m_cold["ndcg@10"],
                "cold_recall@50": m_cold50["recall@50"],
                "cold_mrr": m_cold["mrr"],
                "warm_recall@10": m_warm["recall@10"],
                "warm_ndcg@10": m_warm["ndcg@10"],
                "all_recall@10": m_all["recall@10"],
                "all_ndcg@10": m_all["ndcg@10"],
                "cold_cases": m_cold["cases"],
                "cosine": cosine(res.rows, learned[cold]) if res.rows is not None else 1.0,
                "norm": float(np.linalg.norm(learned[cold] if res.rows is None else res.rows, axis=1).mean()),
                "fit_s": res.seconds,
                "trainable": res.trainable,
                "trainable_detail": res.detail,
            }
            per_seed.setdefault(name, []).append(row)
            log(f"    {name:24s} cold R@10 {row['cold_recall@10']:.4f} N@10 {row['cold_ndcg@10']:.4f}  warm R@10 "
                f"{row['warm_recall@10']:.4f}  all R@10 {row['all_recall@10']:.4f}  cos {row['cosine']:.3f}  "
                f"norm {row['norm']:.3f}  fit {res.seconds:.1f}s")
    summary = {}
    for name, rows in per_seed.items():
        agg: dict[str, Any] = {}
        for key in METRICS:
            vals = [r[key] for r in rows]
            agg[key] = statistics.fmean(vals)
            agg[key + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        agg["trainable"] = rows[0]["trainable"]
        agg["trainable_detail"] = rows[0]["trainable_detail"]
        agg["cold_cases"] = sum(r["cold_cases"] for r in rows)
        summary[name] = agg
    return {"sasrec": {"epochs": args.epochs, "recall@10": base["recall@10"], "ndcg@10": base["ndcg@10"],
                       "items": len(items)},
            "summary": summary, "runs": per_seed}


def _timed_ridge(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> ArmResult:
    t0 = time.perf_counter()
    rows = ridge_predict(x, y, x_new)
    return ArmResult(rows, time.perf_counter() - t0, x.shape[1] * y.shape[1] + y.shape[1], {"closed_form": 1})


def table(result: dict[str, Any]) -> str:
    lines = []
    enc = result.get("encoder")
    if enc:
        lines += [
            f"encoder: {enc['file']} ({enc['file_mb']} MB), cached_text_encoder {enc['cached_text_encoder_s']}s, "
            f"load {enc['load_s']}s, {enc['provider']}",
            "| path | items/s | one new item p50 / p90 / p99 ms |",
            "| --- | --- | --- |",
            f"| onnxruntime batch 64 | {enc['onnx_batch64_items_per_s']} | |",
            f"| onnxruntime batch 1 | {enc['onnx_batch1_items_per_s']} | {enc['one_item_ms']['p50']} / "
            f"{enc['one_item_ms']['p90']} / {enc['one_item_ms']['p99']} |",
            f"| torch (item_text) batch 64 | {enc['torch_batch64_items_per_s']} | |",
            "",
        ]
    ad = result.get("adaptation")
    if ad:
        s = ad["sasrec"]
        lines += [
            f"ML-100k LOO, SASRec {s['epochs']} epochs (all items warm: recall@10 {s['recall@10']:.4f}, "
            f"ndcg@10 {s['ndcg@10']:.4f}); mean (sd) over seeds {result['config']['seeds']}",
            "| arm | cold R@10 | cold N@10 | cold R@50 | cold MRR | warm R@10 | warm N@10 | all R@10 | all N@10 "
            "| cos(pred, learned) | row norm | fit s | trainable params |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, a in ad["summary"].items():
            cells = [f"{a[m]:.4f} ({a[m + '_sd']:.4f})" if "cold" in m else f"{a[m]:.4f}" for m in METRICS[:8]]
            lines.append(
                f"| {name} | {' | '.join(cells)} | {a['cosine']:.3f} | {a['norm']:.3f} | {a['fit_s']:.1f} "
                f"| {a['trainable']:,} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to the JSON file."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the JSON to stdout (the table goes to stderr)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 5 SASRec epochs, 2 fit epochs")
    p.add_argument("--epochs", type=int, default=20, help="SASRec epochs (20: ~45 s on 2 idle cores)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the cold-item draws and fits")
    p.add_argument("--cold-fraction", type=float, default=0.2)
    p.add_argument("--arms", default="", help="comma-separated prefixes: run only the arms whose name starts with one")
    p.add_argument("--head", choices=HEADS, default=FitConfig.head)
    p.add_argument("--fit-epochs", type=int, default=FitConfig.epochs)
    p.add_argument("--fit-batch", type=int, default=FitConfig.batch)
    p.add_argument("--lr", type=float, default=FitConfig.lr, help="head learning rate")
    p.add_argument("--lora-lr", type=float, default=FitConfig.lora_lr)
    p.add_argument("--tau", type=float, default=FitConfig.tau)
    p.add_argument("--mse-weight", type=float, default=FitConfig.mse_weight)
    p.add_argument("--rank", type=int, default=FitConfig.rank)
    p.add_argument("--alpha", type=float, default=FitConfig.alpha)
    p.add_argument("--lora-targets", default=",".join(FitConfig.lora_targets), help="e.g. query,value,dense")
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: all cores)")
    p.add_argument("--single", type=int, default=300, help="new items timed one by one")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-adaptation", action="store_true")
    p.add_argument("--out", type=Path, help="result file (default bench/results/text_adapter[-quick].json)")
    args = p.parse_args(argv)
    configure_logging()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.arms = [a for a in args.arms.split(",") if a]
    if args.quick:
        args.seeds, args.epochs, args.fit_epochs, args.single = args.seeds[:1], 5, 2, 50
    cfg = FitConfig(
        head=args.head, epochs=args.fit_epochs, batch=args.fit_batch, lr=args.lr, lora_lr=args.lora_lr,
        tau=args.tau, mse_weight=args.mse_weight, rank=args.rank, alpha=args.alpha,
        lora_targets=tuple(t for t in args.lora_targets.split(",") if t),
    )
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ.setdefault("STREAMREC_TRAIN_THREADS", str(threads))
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
        "config": {**vars(cfg), "seeds": args.seeds, "sasrec_epochs": args.epochs, "cold_fraction": args.cold_fraction,
                   "threads": threads},
    }
    t0 = time.perf_counter()
    if not args.skip_speed:
        log("encoder speed (ML-1M titles)")
        result["encoder"] = encoder_speed(ml1m_texts(), args.single, args.threads)
    if not args.skip_adaptation:
        log("adaptation (ML-100k cold items)")
        result["adaptation"] = adaptation(args, cfg)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(table(result), file=sys.stderr if args.json else sys.stdout, flush=True)
    publish("text_adapter", result, as_json=args.json, out=result_path("text_adapter-quick" if args.quick
                                                                         else "text_adapter", args.out))
    return result


if __name__ == "__main__":
    main()
