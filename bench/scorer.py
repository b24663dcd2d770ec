"""Scoring speed: ONNX Runtime (the serving Scorer) vs eager PyTorch on the same model, CPU and CUDA.

    .venv/bin/streamrec bench scorer [--json] [--quick]   # or: .venv/bin/python -m bench.scorer [--quick]

For each catalog (default 1k, 100k and 1M items) a SASRec (default ``ModelConfig``: d=64, max_len=50) with
seeded random weights is exported by ``model_export.artifact.export.export_artifact`` to a temp dir, so the ONNX path
timed is exactly what serving runs: ``serving.scorer.Scorer`` on that artifact. The eager path is the same
weights in torch: ``model.user_vector`` + ``vector @ item_matrix.T`` + seen items to -inf + ``torch.topk``,
under ``torch.inference_mode``, with torch threads = onnxruntime intra-op threads (``--threads``, default
torch's own default: one per physical core). Both map item ids to rows and rows back to ids.

One batch = B users (B = 1, 4, 16, 64, 256, 1024), random histories of uniform length 1..max_len, top-k with
k = the job's ``top_k`` (20) and each user's history excluded (the serving default). Per (device, catalog,
batch) the two engines run alternately in one loop, warm-up excluded, until both have ``--min-reps`` runs and
``--budget`` seconds have passed; we quote medians. Each run is split into the user tower (ids -> user
vectors) and the item scoring + top-k; users/s = B / median(tower + scoring). Score matrices are chunked over
users at the Scorer's ``max_score_bytes`` (256 MiB on CPU, 2 GiB on CUDA) in both engines, so no combination is
skipped (1,024 users x 1M items would be 4 GiB at once).

Roofline of the item scoring, per batch: FLOPs = 2 B (N + 1) d, bytes = (N + 1) d 4 (item matrix, read once) +
B (N + 1) 4 (scores, written once); floor = max(bytes / peak bandwidth, FLOPs / peak FLOP/s), and
``roofline`` = floor / ``kernel ms`` (1.0 = at the floor), where ``kernel ms`` is the matmul + mask + top-k
alone, without the id mapping around it: for onnxruntime the wall time of the Scorer's scoring-graph runs
(timed inside the production call by a wrapper around its session), for torch ``perf_counter`` on CPU and
CUDA events on a GPU. Peaks are *measured* in the same run:
on CPU the best of a STREAM-like copy (numpy, one thread, and torch, all threads; 2 x bytes per copy) and of
a 2048^3 float32 GEMM (torch and numpy); on CUDA a device-to-device copy and an 8192^3 float32 GEMM (TF32
off, as torch's default), timed with CUDA events; the theoretical DRAM bandwidth from the device properties
is printed beside them. The machine is often shared: compare rows of one run only (the load average at the
start and the end is in the JSON).

Prints a table; writes ``bench/results/scorer.json`` (``--quick``: ``scorer-quick.json``), whose
``cpu``/``cuda`` entries are the summary at B = 64, the batch we serve at (the writer scores all users of
one 100 ms flush per shard in one call), for the largest catalog; ``runs`` holds every row.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from bench.results import publish, result_path
from model_export.artifact.export import export_artifact
from model_export.features import CONTEXT_INPUTS, INPUT_NAME, tower_inputs
from model_export.model import PAD, ModelConfig, SASRec
from serving.onnx_session import CUDA
from serving.scorer import Scorer
from streamrec.cli import configure_logging
from streamrec.config import load_config

CATALOGS = (1_000, 100_000, 1_000_000)
BATCHES = (1, 4, 16, 64, 256, 1024)
SERVE_BATCH = 64  # the writer scores all users of one 100 ms flush per shard in one call
ORT_ENGINE, TORCH_ENGINE = "onnxruntime", "torch_eager"


@dataclass
class Timing:
    """Seconds of each run of one engine on one (device, catalog, batch)."""

    tower: list[float] = field(default_factory=list)
    scoring: list[float] = field(default_factory=list)
    kernel: list[float] = field(default_factory=list)  # matmul + mask + top-k alone

    @property
    def total(self) -> list[float]:
        return [a + b for a, b in zip(self.tower, self.scoring, strict=True)]


class EagerScorer:
    """The eager PyTorch twin of :class:`serving.scorer.Scorer`: same ids in, same ``(id, score)`` lists out."""

    def __init__(self, model: SASRec, items: Sequence[str], device: torch.device, max_score_bytes: int) -> None:
        self.device = device
        self.max_score_bytes = max_score_bytes
        self.model = model.to(device).eval()
        self.items_t = self.model.output_matrix().detach()  # (N + 1, d)
        self.ids = list(items)
        self.row = {item: r for r, item in enumerate(self.ids, start=1)}
        self.max_len = model.cfg.max_len
        self.kernel_s = 0.0  # the last top_k's matmul + mask + top-k (CUDA events on a GPU)

    def user_vectors(self, histories: Sequence[Sequence[str]]) -> tuple[torch.Tensor, list[list[int]]]:
        rows = [[self.row[i] for i in h if i in self.row] for h in histories]
        # The feed the ONNX scorer builds for histories without times or scenarios: "no earlier event"
        # gaps and unknown scenarios, so that both engines compute the same user vectors.
        none = [None] * len(rows)
        feed = tower_inputs(rows, none, none, self.max_len, {}, [INPUT_NAME, *CONTEXT_INPUTS])
        seq, gaps, scen = (torch.from_numpy(feed[n]).to(self.device) for n in (INPUT_NAME, *CONTEXT_INPUTS))
        with torch.inference_mode():
            vec = self.model.user_vector(seq, gaps, scen)  # (B, d)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return vec, rows

    def top_k(self, vec: torch.Tensor, rows: list[list[int]], k: int) -> list[list[tuple[str, float]]]:
        """Top-k per user, each user's own rows excluded; sets :attr:`kernel_s`."""
        n_rows = self.items_t.shape[0]
        chunk = max(1, self.max_score_bytes // (4 * n_rows))
        cuda = self.device.type == "cuda"
        out: list[list[tuple[str, float]]] = []
        self.kernel_s = 0.0
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            users = torch.tensor([b for b, r in enumerate(part) for _ in set(r)], dtype=torch.long, device=self.device)
            seen = torch.tensor([x for r in part for x in set(r)], dtype=torch.long, device=self.device)
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            if cuda:
                begin.record()
            with torch.inference_mode():
                scores = vec[start : start + chunk] @ self.items_t.T  # (b, N + 1)
                scores[:, PAD] = -torch.inf
                scores[users, seen] = -torch.inf
                top_scores, top = torch.topk(scores, min(k, n_rows), dim=1)  # (b, k), best first
            if cuda:
                end.record()
                end.synchronize()
                self.kernel_s += begin.elapsed_time(end) / 1e3
            else:
                self.kernel_s += time.perf_counter() - t0
            del scores
            for b, (r_ids, r_scores) in enumerate(zip(top.cpu().tolist(), top_scores.cpu().tolist(), strict=True)):
                ok = bool(part[b])
                out.append([(self.ids[r - 1], s) for r, s in zip(r_ids, r_scores, strict=True) if ok and s != -np.inf])
        return out


class TimedRuns:
    """Stands in for the Scorer's scoring session: adds each run's wall time to :attr:`seconds`.

    So the item-scoring graph (matmul + mask + top-k, and on CUDA its host <-> device copies) is timed
    inside the production call, without the id mapping around it.
    """

    def __init__(self, sess: ort.InferenceSession) -> None:
        self.sess = sess
        self.seconds = 0.0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.sess.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def get_providers(self) -> list[str]:
        return list(self.sess.get_providers())


def measure_peaks(device: torch.device, threads: int) -> dict[str, Any]:
    """Measured peak memory bandwidth (GB/s) and float32 FLOP/s (GFLOP/s) of the device, best of a few."""
    return _cpu_peaks(threads) if device.type == "cpu" else _cuda_peaks(device)


def _cpu_peaks(threads: int) -> dict[str, Any]:
    n = 64 << 20  # 64M float32 = 256 MiB per array, far beyond any cache
    src, dst = np.ones(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    ts, td = torch.from_numpy(src), torch.from_numpy(dst)
    m = 2048
    a, b = torch.randn(m, m), torch.randn(m, m)
    an, bn = a.numpy(), b.numpy()
    bw = {
        "copy_numpy_gbs": 2 * 4 * n / _best(lambda: np.copyto(dst, src), 5) / 1e9,
        "copy_torch_gbs": 2 * 4 * n / _best(lambda: td.copy_(ts), 5) / 1e9,
    }
    fl = {
        "gemm_torch_gflops": 2 * m**3 / _best(lambda: torch.mm(a, b), 5) / 1e9,
        "gemm_numpy_gflops": 2 * m**3 / _best(lambda: an @ bn, 5) / 1e9,
    }
    return {
        "measured": True,
        "threads": threads,
        **{k: round(v, 1) for k, v in {**bw, **fl}.items()},
        "bandwidth_gbs": round(max(bw.values()), 1),
        "gflops": round(max(fl.values()), 1),
        "how": "best of 5: STREAM-like copy of 256 MiB (2 x bytes), numpy 1 thread / torch all threads; "
        "2048^3 float32 GEMM, torch and numpy",
    }


def _cuda_peaks(device: torch.device) -> dict[str, Any]:
    n = 256 << 20  # 1 GiB per array
    src, dst = torch.ones(n, device=device), torch.empty(n, device=device)
    copy_gbs = 2 * 4 * n / _cuda_best(lambda: dst.copy_(src), 10) / 1e9
    m = 8192
    a, b = torch.randn(m, m, device=device), torch.randn(m, m, device=device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gflops = 2 * m**3 / _cuda_best(lambda: torch.mm(a, b), 10) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    props = torch.cuda.get_device_properties(device)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    return {
        "measured": True,
        "name": props.name,
        "copy_d2d_gbs": round(copy_gbs, 1),
        "gemm_fp32_gflops": round(gflops, 1),
        # DDR: two transfers per memory clock.
        "theoretical_dram_gbs": round(2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, 1) if clock_khz else None,
        "bandwidth_gbs": round(copy_gbs, 1),
        "gflops": round(gflops, 1),
        "how": "best of 10, CUDA events: device-to-device copy of 1 GiB (2 x bytes); 8192^3 float32 GEMM, TF32 off",
    }


def _best(fn: Callable[[], object], reps: int) -> float:
    """Fastest of ``reps`` timed calls after one warm-up, seconds."""
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def _cuda_best(fn: Callable[[], object], reps: int) -> float:
    """Fastest of ``reps`` calls after one warm-up, seconds by CUDA events."""
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        out.append(begin.elapsed_time(end) / 1e3)
    return min(out)


def roofline(batch: int, n_rows: int, dim: int, peaks: dict[str, Any]) -> dict[str, float]:
    """FLOPs, bytes and floor time (s) of scoring ``batch`` users against ``n_rows`` items."""
    flops = 2.0 * batch * n_rows * dim
    nbytes = 4.0 * n_rows * dim + 4.0 * batch * n_rows
    floor = max(nbytes / (peaks["bandwidth_gbs"] * 1e9), flops / (peaks["gflops"] * 1e9))
    return {"flops": flops, "bytes": nbytes, "floor_s": floor}


def histories_for(rng: np.random.Generator, items: Sequence[str], batch: int, max_len: int) -> list[list[str]]:
    lengths = rng.integers(1, max_len + 1, size=batch)
    picks = rng.integers(0, len(items), size=int(lengths.sum()))
    out, at = [], 0
    for n in lengths.tolist():
        out.append([items[i] for i in picks[at : at + n].tolist()])
        at += n
    return out


def agreement(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> dict[str, float]:
    """How alike two engines' top-k lists are: identical lists, overlap, largest score difference."""
    same = sum(1 for x, y in zip(a, b, strict=True) if [i for i, _ in x] == [i for i, _ in y])
    overlap = [len({i for i, _ in x} & {i for i, _ in y}) / max(1, len(x)) for x, y in zip(a, b, strict=True)]
    diff = max(
        (abs(s - t) for x, y in zip(a, b, strict=True) for (_, s), (_, t) in zip(x, y, strict=False)), default=0.0
    )
    return {"identical_lists": same / len(a), "overlap": float(np.mean(overlap)), "max_score_diff": diff}


def run_catalog(
    n_items: int,
    device: torch.device,
    batches: Sequence[int],
    peaks: dict[str, Any],
    args: argparse.Namespace,
    k: int,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Export one random model of ``n_items`` items, then time both engines at every batch size."""
    torch.manual_seed(args.seed)
    cfg = ModelConfig()
    model = SASRec(n_items, cfg).eval()
    items = [f"i{n}" for n in range(n_items)]
    with tempfile.TemporaryDirectory(prefix="bench-scorer-") as tmp:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            path = export_artifact(
                model, items, Path(tmp) / "artifact", version="bench", metrics={}, train_data={"min_ts": 0, "max_ts": 0}
            )
        export_s = time.perf_counter() - t0
        scorer = Scorer(path, prefer_gpu=device.type == "cuda", intra_op_threads=args.threads)
    eager = EagerScorer(model, items, device, scorer.max_score_bytes)
    timed = TimedRuns(scorer._score_sess)
    scorer._score_sess = timed  # type: ignore[assignment]
    say(f"  {device.type} catalog {n_items:,}: exported in {export_s:.1f} s; onnxruntime on {scorer.provider}")
    rng = np.random.default_rng(args.seed)
    check = histories_for(rng, items, 64, cfg.max_len)
    vec, rows = eager.user_vectors(check)
    info = {
        "catalog": n_items,
        "device": device.type,
        "onnxruntime_provider": scorer.provider,
        "agreement_b64": agreement(scorer.score(check, k), eager.top_k(vec, rows, k)),
    }

    def run_ort(hist: list[list[str]], t: Timing) -> None:
        # Scorer.score is exactly user_vectors + _top_k; called in two halves to time each.
        t0 = time.perf_counter()
        vec, rows = scorer.user_vectors(hist)
        t1 = time.perf_counter()
        timed.seconds = 0.0
        scorer._top_k(vec, rows, hist, k, None)
        t2 = time.perf_counter()
        t.tower.append(t1 - t0)
        t.scoring.append(t2 - t1)
        t.kernel.append(timed.seconds)

    def run_eager(hist: list[list[str]], t: Timing) -> None:
        t0 = time.perf_counter()
        vec, rows = eager.user_vectors(hist)
        t1 = time.perf_counter()
        eager.top_k(vec, rows, k)
        t2 = time.perf_counter()
        t.tower.append(t1 - t0)
        t.scoring.append(t2 - t1)
        t.kernel.append(eager.kernel_s)

    engines = {ORT_ENGINE: run_ort, TORCH_ENGINE: run_eager}
    out = []
    for batch in batches:
        hist = histories_for(rng, items, batch, cfg.max_len)
        times = {name: Timing() for name in engines}
        for fn in engines.values():  # warm-up: allocations, kernel selection, arenas
            fn(hist, Timing())
        start, reps = time.perf_counter(), 0
        while reps < args.min_reps or (time.perf_counter() - start < args.budget and reps < args.max_reps):
            order = list(engines) if reps % 2 == 0 else list(engines)[::-1]
            for name in order:
                engines[name](hist, times[name])
            reps += 1
        roof = roofline(batch, n_items + 1, cfg.d, peaks)
        for name, t in times.items():
            med = statistics.median
            row = {
                "device": device.type,
                "catalog": n_items,
                "batch": batch,
                "engine": name,
                "provider": scorer.provider if name == ORT_ENGINE else f"torch:{device.type}",
                "reps": len(t.tower),
                "users_per_s": batch / med(t.total),
                "batch_ms_p50": 1e3 * med(t.total),
                "batch_ms_p90": 1e3 * float(np.quantile(t.total, 0.9)),
                "tower_ms": 1e3 * med(t.tower),
                "scoring_ms": 1e3 * med(t.scoring),
                "kernel_ms": 1e3 * med(t.kernel),
                "chunks": -(-batch // max(1, scorer.max_score_bytes // (4 * (n_items + 1)))),
                "gflop": roof["flops"] / 1e9,
                "mbytes": roof["bytes"] / 1e6,
                "floor_ms": 1e3 * roof["floor_s"],
                "roofline": roof["floor_s"] / med(t.kernel),
            }
            out.append(row)
            say(_fmt(row))
    return out, info


HEADER = (
    f"{'device':6} {'catalog':>9} {'batch':>5} {'engine':12} {'users/s':>9} {'ms/batch':>9} {'tower ms':>9} "
    f"{'scoring ms':>10} {'kernel ms':>9} {'floor ms':>9} {'roofline':>8}"
)


def _fmt(r: dict[str, Any]) -> str:
    return (
        f"{r['device']:6} {r['catalog']:>9,} {r['batch']:>5} {r['engine']:12} {r['users_per_s']:>9,.0f} "
        f"{r['batch_ms_p50']:>9.2f} {r['tower_ms']:>9.2f} {r['scoring_ms']:>10.2f} {r['kernel_ms']:>9.2f} "
        f"{r['floor_ms']:>9.2f} {r['roofline']:>8.2f}"
    )


def summary(rows: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """The ``cpu``/``cuda`` entry: users/s of both engines at the serve batch, largest catalog first."""
    at = {(r["catalog"], r["engine"]): r for r in rows if r["device"] == device and r["batch"] == SERVE_BATCH}
    catalogs = sorted({c for c, _ in at}, reverse=True)
    if not catalogs:
        return {"skipped": f"batch {SERVE_BATCH} not measured"}

    def entry(c: int) -> dict[str, Any]:
        o, e = at[(c, ORT_ENGINE)], at[(c, TORCH_ENGINE)]
        return {
            "catalog": c,
            "batch": SERVE_BATCH,
            "onnxruntime_users_per_s": round(o["users_per_s"], 1),
            "torch_eager_users_per_s": round(e["users_per_s"], 1),
            "onnxruntime_over_torch": round(o["users_per_s"] / e["users_per_s"], 2),
        }

    return {
        **entry(catalogs[0]),
        "why_batch": "the writer scores all users of one 100 ms flush per shard in one call; "
        f"we serve at batch {SERVE_BATCH}",
        "by_catalog": {str(c): entry(c) for c in catalogs},
    }


def machine(threads: int) -> dict[str, Any]:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "threads": threads,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],  # 1, 5, 15 min
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the table (and the JSON with --json)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the JSON to stdout (the table goes to stderr)")
    p.add_argument("--quick", action="store_true", help="smoke run: catalogs 1k and 100k, batches 1, 64, 256")
    p.add_argument("--catalogs", help="comma-separated item counts (default 1000,100000,1000000)")
    p.add_argument("--batches", help="comma-separated batch sizes (default 1,4,16,64,256,1024)")
    p.add_argument("--devices", default="cpu,cuda", help="cpu and/or cuda (cuda only where torch sees a GPU)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and onnxruntime threads")
    p.add_argument("--min-reps", type=int, default=3, help="timed runs per engine at least")
    p.add_argument("--max-reps", type=int, default=30, help="timed runs per engine at most")
    p.add_argument("--budget", type=float, default=1.5, help="seconds of timed runs per (catalog, batch) at least")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="result file (default bench/results/scorer.json or scorer-quick.json)")
    args = p.parse_args(argv)
    configure_logging()
    if args.quick:
        args.min_reps, args.budget = 2, 0.3
    catalogs = (
        [int(x) for x in args.catalogs.split(",")]
        if args.catalogs
        else ([1_000, 100_000] if args.quick else list(CATALOGS))
    )
    batches = (
        [int(x) for x in args.batches.split(",")]
        if args.batches
        else ([1, SERVE_BATCH, 256] if args.quick else list(BATCHES))
    )
    out_file = result_path("scorer-quick" if args.quick else "scorer", args.out)
    stream = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    torch.set_num_threads(args.threads)
    k = load_config().job.top_k
    result: dict[str, Any] = {"machine": machine(args.threads), "k": k, "serve_batch": SERVE_BATCH}
    devices = []
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            result["cuda"] = {"skipped": "no CUDA device visible to torch (torch.cuda.is_available() is False)"}
            say(f"cuda: skipped ({result['cuda']['skipped']})")
            continue
        devices.append(torch.device(name))
    rows: list[dict[str, Any]] = []
    checks, peaks_by = [], {}
    started = time.perf_counter()
    for device in devices:
        peaks = peaks_by[device.type] = measure_peaks(device, args.threads)
        say(f"{device.type} peaks (measured): {peaks['bandwidth_gbs']} GB/s, {peaks['gflops']} GFLOP/s ({peaks})")
        say(HEADER)
        for n in catalogs:
            got, info = run_catalog(n, device, batches, peaks, args, k, say)
            rows += got
            checks.append(info)
            gc.collect()  # this catalog's Scorer and models
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if device.type == "cuda" and not any(c["onnxruntime_provider"] == CUDA for c in checks):
            say("  note: onnxruntime fell back to CPU on this GPU machine (see the Scorer's log line)")
    for device in devices:
        result[device.type] = summary(rows, device.type)
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result.update({"peaks": peaks_by, "checks": checks, "runs": rows, "seconds": round(time.perf_counter() - started)})
    say("\n" + HEADER)
    for r in rows:
        say(_fmt(r))
    say(
        f"\nagreement of the two engines' top-{k} on 64 users: "
        + "; ".join(
            f"{c['device']} {c['catalog']:,}: {c['agreement_b64']['identical_lists']:.0%} identical lists, "
            f"overlap {c['agreement_b64']['overlap']:.3f}"
            for c in checks
        )
    )
    for device in devices:
        s = result[device.type]
        if "catalog" in s:
            say(
                f"{device.type} at batch {SERVE_BATCH} (the batch we serve at), {s['catalog']:,} items: "
                f"onnxruntime {s['onnxruntime_users_per_s']:,.0f} users/s, eager torch "
                f"{s['torch_eager_users_per_s']:,.0f} users/s (x{s['onnxruntime_over_torch']})"
            )
    publish("scorer", result, as_json=args.json, out=out_file)
    return result


if __name__ == "__main__":
    main()
