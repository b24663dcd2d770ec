"""Train the sequential recommender, evaluate it against popularity, export and parity-check it.

Run (via the CLI): ``streamrec train --dataset ml-100k``; from Python::

    from model_export.pipeline import train_and_export
    train_and_export("ml-100k", Path("build/models"), seed=0)

Environment: ``STREAMREC_TRAIN_THREADS`` caps torch's CPU threads (default: all cores).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from model_export.artifact.contract import CONTEXT_INPUTS, INPUT_NAME
from model_export.calibration import calibration_items, calibration_positions, user_vectors_at
from model_export.data.datasets import DEFAULT_SCENARIO, Dataset, build_sequences
from model_export.data.splits import History, Split, item_index
from model_export.errors import NotEnoughDataError
from model_export.evaluation.metrics import Ranker
from model_export.features import gap_buckets, left_pad, scenario_ids, scenario_vocab, tower_inputs
from model_export.model import PAD, ModelConfig, SASRec


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained and evaluated (the model's own shape is in ``model``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    # ML-100k: ~2.5 s/epoch on 2 CPU cores; 30 epochs reach LOO Recall@10 ~0.23 (2.6x popularity).
    # ML-1M (max_len 200, batch 64): ~65 s/epoch; 30 epochs reach 0.33 (bench/results/quality-ml1m.json).
    epochs: int = 30
    batch_size: int = 128
    # Adam at 2e-3 (twice the usual SASRec rate): converges within the short CPU budget, and
    # full softmax CE is stable there.
    lr: float = 2e-3
    # Held-out share of events (by time) for the ``time`` protocol.
    test_fraction: float = 0.2
    # Cut-off of Recall@k / NDCG@k.
    k: int = 10
    # "cuda" trains on a GPU when one is there; the default keeps runs reproducible on CPU.
    device: str = "cpu"
    # Stop early after this many seconds of training (None: run all epochs); keeps CI and demos short.
    max_seconds: float | None = None
    # 0: full softmax over every item; N > 0: sampled softmax against N shared uniform negatives.
    negatives: int = 0
    # Cosine decay of the learning rate to 0 over ``epochs``: ML-100k LOO Recall@10 0.2238 vs 0.2131
    # at a constant rate (30 epochs, seed 0); the last epochs settle instead of bouncing.
    lr_decay: bool = True
    # Text-only rows (items without training events) are scaled so that a relevant one reaches the top k
    # this share as often as a relevant trained item (:meth:`SASRec.calibrate_text_only`): 1.0 is equal
    # opportunity for new items; 0 leaves them unscaled (they then rarely reach a top 10).
    cold_exposure: float = 1.0


@dataclass
class TrainedModel:
    """A trained model with its item index (``items[i]`` is row ``i + 1``; row 0 is padding)."""

    model: SASRec
    items: list[str]
    config: TrainConfig
    seed: int
    train_seconds: float
    epochs_run: int
    final_loss: float
    scenarios: list[str] = field(default_factory=list)

    def inputs(self, histories: Sequence[History]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model inputs of a batch: item rows, time-gap buckets and scenario ids, int64 (B, max_len) each."""
        return model_inputs(histories, self.config.model.max_len, scenario_vocab(self.scenarios))

    def ranker(self) -> Ranker:
        """Scores (B, N + 1) of histories, for :func:`model_export.evaluation.metrics.evaluate`."""
        self.model.eval()
        emb = self.model.output_matrix().detach()

        def rank(histories: Sequence[History]) -> np.ndarray:
            with torch.no_grad():
                return (self.model.user_vector(*self.inputs(histories)) @ emb.T).numpy()  # (B, N + 1)

        return rank


def model_inputs(
    histories: Sequence[History], max_len: int, vocab: Mapping[str, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Item rows, time-gap buckets and scenario ids of histories, int64 (B, max_len) each, as the scorer feeds them."""
    feed = tower_inputs(
        [h.rows for h in histories],
        [h.ts for h in histories],
        [h.scenarios for h in histories],
        max_len,
        vocab,
        [INPUT_NAME, *CONTEXT_INPUTS],
    )
    return tuple(torch.from_numpy(feed[n]) for n in (INPUT_NAME, *CONTEXT_INPUTS))  # type: ignore[return-value]


def _threads() -> int:
    return int(os.environ.get("STREAMREC_TRAIN_THREADS", os.cpu_count() or 1))


def _windows(
    seqs: Iterable[tuple[Sequence[int], np.ndarray, np.ndarray]], max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each (rows, gap buckets, scenario ids) sequence into next-item windows of max_len, newest first.

    Long histories give several windows so that every item is a target exactly once.

    Returns:
        Inputs, targets, gaps and scenarios, int64 (W, max_len) each, right-aligned and left-padded with 0.
    """
    inputs, targets, gaps, scens = [], [], [], []
    for s, g, c in seqs:
        end = len(s)
        while end > 1:
            start = max(0, end - (max_len + 1))
            inputs.append(s[start : end - 1])
            targets.append(s[start + 1 : end])
            gaps.append(g[start : end - 1])
            scens.append(c[start : end - 1])
            end = start + 1 if start > 0 else 0
    return tuple(left_pad(x, max_len, PAD) for x in (inputs, targets, gaps, scens))  # type: ignore[return-value]


def _aligned_context(split: Split) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """Event times and scenarios of ``split.train``, matched in order against the full sequences.

    ``split.train[u]`` is a subsequence of ``split.sequences[u]`` (a prefix, or one with hidden items
    removed), so a greedy in-order match aligns them.
    """
    times: dict[str, list[int]] = {}
    scens: dict[str, list[str]] = {}
    for user, seq in split.train.items():
        full, ts = split.sequences.get(user, []), split.times.get(user, [])
        sc = split.scenarios.get(user) or [DEFAULT_SCENARIO] * len(full)
        t_out: list[int] = []
        s_out: list[str] = []
        j = 0
        for item in seq:
            while j < len(full) and full[j] != item:
                j += 1
            if j == len(full):
                break
            t_out.append(ts[j])
            s_out.append(sc[j])
            j += 1
        if len(t_out) == len(seq):
            times[user], scens[user] = t_out, s_out
    return times, scens


def train_split(
    split: Split,
    config: TrainConfig | None = None,
    seed: int = 0,
    *,
    items: Sequence[str] | None = None,
    catalog: Mapping[str, Mapping[str, Any]] | None = None,
    init: tuple[SASRec, Sequence[str]] | None = None,
    scenario_names: Sequence[str] | None = None,
    encode: Callable[[list[str]], np.ndarray] | None = None,
    on_epoch: Callable[[TrainedModel], None] | None = None,
) -> TrainedModel:
    """:func:`train` on a split's training data, with its event times and scenarios."""
    times, scenarios = _aligned_context(split)
    return train(
        split.train, config, seed, init=init, items=items, catalog=catalog,
        times=times, scenarios=scenarios, scenario_names=scenario_names, encode=encode, on_epoch=on_epoch,
    )


def train(
    data: Dataset | Mapping[str, Sequence[str]],
    config: TrainConfig | None = None,
    seed: int = 0,
    *,
    init: tuple[SASRec, Sequence[str]] | None = None,
    items: Sequence[str] | None = None,
    catalog: Mapping[str, Mapping[str, Any]] | None = None,
    times: Mapping[str, Sequence[int]] | None = None,
    scenarios: Mapping[str, Sequence[str]] | None = None,
    scenario_names: Sequence[str] | None = None,
    encode: Callable[[list[str]], np.ndarray] | None = None,
    on_epoch: Callable[[TrainedModel], None] | None = None,
) -> TrainedModel:
    """Train a :class:`~model_export.model.SASRec` on every user's full sequence.

    Args:
        data: A data set (all its events are used) or ``{user_id: [item_id, ...]}`` oldest first
            (e.g. ``Split.train`` or :func:`~model_export.data.datasets.build_sequences`).
        config: Training settings; defaults to :class:`TrainConfig`.
        seed: Seeds torch and numpy: the same data, config and seed give the same model on CPU.
        init: Warm start: a model and its item index (``items[i]`` is row ``i + 1``) to continue
            training from, in place, instead of a fresh one; its index must hold every item of
            ``data`` (grow it first: :func:`model_export.cold_start.grow_item_table`), and its
            shape replaces ``config.model``.
        items: The item index to learn (``items[i]`` is row ``i + 1``); default: the items of ``data``.
            It may hold items without any training event (cold items): the model scores them from
            their text only.
        catalog: ``items`` topic records by item id: their text feeds the model's text tower
            (when ``config.model.text``). Items without a record get no text.
        times: Event times (epoch ms) aligned with each sequence of ``data``, for the time-gap
            input; users without them get "no earlier event" gaps.
        scenarios: Scenario names aligned with each sequence, for the scenario input.
        scenario_names: The model's scenario vocabulary (a warm start keeps its parent's); default:
            the names in ``scenarios``, sorted.
        encode: Texts -> unit vectors (default :func:`model_export.text_embedding.encode_texts`).
        on_epoch: Called after each epoch with the model so far (``epochs_run`` is the epoch; the
            model is on the training device; training resumes in training mode afterwards).

    Returns:
        The trained model (in eval mode) and its item index.

    Raises:
        NotEnoughDataError: no user has two events to learn a transition from.
        ValueError: ``init``'s item index lacks items of ``data``.
    """
    cfg = config or TrainConfig()
    seqs = build_sequences(data.events) if isinstance(data, Dataset) else data
    if init is not None:
        items = list(init[1])
        if len(items) != init[0].n_items:
            msg = f"warm start: {len(items)} item ids for a model of {init[0].n_items} items"
            raise ValueError(msg)
        missing = sorted({i for s in seqs.values() for i in s} - set(items))
        if missing:
            msg = f"warm start: the model's index lacks {len(missing)} items of the data, e.g. {missing[:3]}"
            raise ValueError(msg)
        cfg = replace(cfg, model=init[0].cfg)
    elif items is not None:
        items = list(items)
        missing = sorted({i for s in seqs.values() for i in s} - set(items))
        if missing:
            msg = f"the item index lacks {len(missing)} items of the data, e.g. {missing[:3]}"
            raise ValueError(msg)
    else:
        items = item_index(seqs)
    row = {item: r for r, item in enumerate(items, start=1)}
    if scenario_names is not None:
        names = list(scenario_names)
    else:
        names = sorted({sc for seq in (scenarios or {}).values() for sc in seq})
    vocab = scenario_vocab(names)

    def context(user: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        ts, sc = (times or {}).get(user), (scenarios or {}).get(user)
        gaps = gap_buckets(ts) if ts is not None and len(ts) == n else np.ones(n, dtype=np.int64)
        ids = scenario_ids(sc, vocab) if sc is not None and len(sc) == n else np.full(n, 1, dtype=np.int64)
        return gaps, ids

    x, y, g, c = _windows(
        (([row[i] for i in s], *context(u, len(s))) for u, s in seqs.items()), cfg.model.max_len
    )
    if len(x) == 0:
        raise NotEnoughDataError("no user has two events, so there is no next item to learn")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(_threads())
    device = torch.device(cfg.device)
    if init is not None:
        model = init[0]
    else:
        text = _text_features(items, catalog, encode) if cfg.model.text and catalog else None
        model = SASRec(len(items), cfg.model, len(names), 0 if text is None else text.shape[1])
        if text is not None:
            model.set_items(text=torch.from_numpy(text))
    # Items with training events have an id row; the others (cold) are scored from their text only.
    has_id = np.zeros(len(items) + 1, dtype=np.float32)
    has_id[np.unique(y)] = 1.0
    has_id[np.unique(x)] = 1.0
    if init is not None:
        has_id = np.maximum(has_id, model.has_id.numpy())
    model.set_items(has_id=torch.from_numpy(has_id))
    probe = calibration_items(items, has_id > 0, model.text_feat.abs().sum(1).numpy() > 0)
    text_fixed = torch.from_numpy(probe).to(device) if model.text_proj is not None else None
    # Pairs trained on overstate how well a row ranks (the user vectors were fitted to them), so the
    # calibration pairs are left out of the loss: their recall is then measured as on new events.
    held = calibration_positions(y, probe, rng) if text_fixed is not None else np.zeros((0, 2), dtype=np.int64)
    calib_targets = torch.from_numpy(y[held[:, 0], held[:, 1]])
    y[held[:, 0], held[:, 1]] = PAD
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * -(-len(x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cfg.lr_decay else None
    gt, ct = torch.from_numpy(g).to(device), torch.from_numpy(c).to(device)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    t0 = time.perf_counter()
    loss_value, epoch = float("nan"), 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        order = torch.from_numpy(rng.permutation(len(x))).to(device)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = model.loss(xt[idx], yt[idx], gt[idx], ct[idx], cfg.negatives, text_fixed)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * len(idx)
        loss_value = total / len(order)
        elapsed = time.perf_counter() - t0
        if epoch == 1 or epoch % 10 == 0 or epoch == cfg.epochs:
            print(f"  epoch {epoch:3d}/{cfg.epochs}  loss {loss_value:.4f}  {elapsed:5.1f}s", flush=True)
        if on_epoch is not None:
            on_epoch(TrainedModel(model, items, cfg, seed, elapsed, epoch, loss_value, names))
            model.train()
        if cfg.max_seconds is not None and elapsed > cfg.max_seconds:
            print(f"  stopping after {epoch} epochs: max_seconds={cfg.max_seconds} reached", flush=True)
            break
    model.eval()
    model.to("cpu")
    queries = user_vectors_at(model, xt.cpu(), gt.cpu(), ct.cpu(), held)
    # The window's other items do not compete: the earlier ones are seen (filtered when serving), and
    # the later ones were trained as next items of nearly the same history, so they crowd its top k.
    window = np.concatenate([x[held[:, 0]], y[held[:, 0]]], axis=1)  # (P, 2 max_len)
    exclude = torch.zeros(len(held), len(items) + 1, dtype=torch.bool)
    exclude.scatter_(1, torch.from_numpy(window), True)
    model.calibrate_text_only(queries, calib_targets, cfg.cold_exposure, cfg.k, exclude)
    return TrainedModel(model, items, cfg, seed, time.perf_counter() - t0, epoch, loss_value, names)


def _text_features(
    items: Sequence[str],
    catalog: Mapping[str, Mapping[str, Any]],
    encode: Callable[[list[str]], np.ndarray] | None,
) -> np.ndarray | None:
    """Frozen text embeddings of the item index, float32 (N + 1, 384); None if no item has text."""
    from model_export.features import TEXT_DIM, item_text
    from model_export.text_embedding import encode_texts

    encode = encode or encode_texts
    texts = [item_text(catalog[i]) if i in catalog else "" for i in items]
    if not any(texts):
        return None
    out = np.zeros((len(items) + 1, TEXT_DIM), dtype=np.float32)
    have = [r for r, t in enumerate(texts) if t]
    out[[r + 1 for r in have]] = encode([texts[r] for r in have])
    return out


