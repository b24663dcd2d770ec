"""Train the sequential recommender, evaluate it against popularity, export and parity-check it.

Run (via the CLI): ``streamrec train --dataset ml-100k``; from Python::

    from model_export.pipeline import train_and_export
    train_and_export("ml-100k", Path("build/models"), seed=0)

Environment: ``STREAMREC_TRAIN_THREADS`` caps torch's CPU threads (default: all cores).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model_export import calibration
from model_export.calibration import calibration_items
from model_export.data.datasets import Dataset, build_sequences
from model_export.data.splits import History, Ranker, Split, item_index
from model_export.errors import NotEnoughDataError
from model_export.features import (
    CONTEXT_INPUTS,
    INPUT_NAME,
    gap_buckets,
    left_pad,
    scenario_ids,
    scenario_vocab,
    tower_inputs,
)
from model_export.model import PAD, ModelConfig, SASRec
from streamrec.config import CUTOFF
from streamrec.events import DEFAULT_SCENARIO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained and evaluated (the model's own shape is in ``model``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 30
    batch_size: int = 128
    # Adam at 2e-3 (twice the usual SASRec rate): converges within a short CPU budget, and full softmax
    # cross-entropy is stable there.
    lr: float = 2e-3
    # Held-out share of events (by time) for the ``time`` protocol.
    test_fraction: float = 0.2
    # Cut-off of Recall@k / NDCG@k.
    k: int = CUTOFF
    # "cuda" trains on a GPU when one is there; the default keeps runs reproducible on CPU.
    device: str = "cpu"
    # Stop early after this many seconds of training (None: run all epochs); keeps CI and demos short.
    max_seconds: float | None = None
    # 0: full softmax over every item; N > 0: sampled softmax against N shared uniform negatives.
    negatives: int = 0
    # Cosine decay of the learning rate to 0 over ``epochs``: the last epochs settle instead of bouncing.
    lr_decay: bool = True
    # Text-only rows (items without training events) are scaled so that a relevant one reaches the top k
    # this share as often as a relevant trained item (:meth:`SASRec.calibrate_text_only`): 1.0 is equal
    # opportunity for new items; 0 leaves them unscaled (they then rarely reach a top 10).
    cold_exposure: float = 1.0
    # Share of the trained items whose text the projection never fits (:mod:`model_export.calibration`):
    # their text-only rows stand in for never-seen items. Texts the projection had fitted rank too well.
    calibration_item_share: float = 0.05
    # Calibration pairs (a calibration item as the next item) held out of the loss: up to this many, enough
    # for a stable recall@k estimate and a few seconds of scoring on CPU...
    calibration_pairs: int = 4096
    # ... and at most this share of the calibration items' next-item events, so that their id rows still
    # learn about as well as the others' (the reference the text-only rows are calibrated against).
    calibration_holdout: float = 0.25
    # With a validation score (``train(select=...)``): measure it every this many epochs and after the last,
    # and keep the weights of the best measurement (the epoch count is then chosen on validation).
    validate_every: int = 5


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
    # With ``train(select=...)``: the epoch whose weights were kept, and each measured (epoch, score).
    selected_epoch: int | None = None
    validation_curve: list[tuple[int, float]] = field(default_factory=list)

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
    select: Callable[[TrainedModel], float] | None = None,
) -> TrainedModel:
    """:func:`train` on a split's training data, with its event times and scenarios."""
    times, scenarios = _aligned_context(split)
    return train(
        split.train, config, seed, init=init, items=items, catalog=catalog, times=times, scenarios=scenarios,
        scenario_names=scenario_names, encode=encode, on_epoch=on_epoch, select=select,
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
    select: Callable[[TrainedModel], float] | None = None,
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
        select: A validation score of the model so far (higher is better; never read test data in it),
            measured every ``config.validate_every`` epochs and after the last: the best weights are kept.

    Returns:
        The trained model (in eval mode) and its item index.

    Raises:
        NotEnoughDataError: no user has two events to learn a transition from.
        ValueError: ``init``'s item index lacks items of ``data``.
    """
    cfg = config or TrainConfig()
    seqs = build_sequences(data.events) if isinstance(data, Dataset) else data
    items, cfg = _item_index(seqs, cfg, init, items)
    names = list(scenario_names) if scenario_names is not None else sorted(
        {sc for seq in (scenarios or {}).values() for sc in seq}
    )
    windows = _training_windows(seqs, items, times, scenarios, scenario_vocab(names), cfg.model.max_len)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(_threads())
    model = init[0] if init is not None else _new_model(items, cfg, len(names), catalog, encode)
    _mark_trained_rows(model, windows, keep=init is not None)
    probe = calibration_items(
        items, model.has_id.numpy() > 0, model.text_feat.abs().sum(1).numpy() > 0, cfg.calibration_item_share
    )
    has_projection = model.text_proj is not None
    held = (
        calibration.hold_out(windows[1], probe, rng, cfg.calibration_pairs, cfg.calibration_holdout)
        if has_projection
        else calibration.HeldOut.none()
    )
    fit = _fit(model, windows, cfg, rng, probe if has_projection else None, items, seed, names, on_epoch, select)
    model.eval()
    model.to("cpu")
    calibration.calibrate(model, windows, held, cfg.cold_exposure, cfg.k)
    return TrainedModel(
        model, items, cfg, seed, time.perf_counter() - fit.started, fit.epochs, fit.loss, names,
        fit.selected_epoch, fit.curve,
    )


def _item_index(
    seqs: Mapping[str, Sequence[str]],
    cfg: TrainConfig,
    init: tuple[SASRec, Sequence[str]] | None,
    items: Sequence[str] | None,
) -> tuple[list[str], TrainConfig]:
    """The item index to train (a warm start's, the given one, or the data's) and the config it implies."""
    if init is not None:
        index = list(init[1])
        if len(index) != init[0].n_items:
            msg = f"warm start: {len(index)} item ids for a model of {init[0].n_items} items"
            raise ValueError(msg)
        cfg = replace(cfg, model=init[0].cfg)
        what = "warm start: the model's index"
    elif items is not None:
        index, what = list(items), "the item index"
    else:
        return item_index(seqs), cfg
    missing = sorted({i for s in seqs.values() for i in s} - set(index))
    if missing:
        msg = f"{what} lacks {len(missing)} items of the data, e.g. {missing[:3]}"
        raise ValueError(msg)
    return index, cfg


def _training_windows(
    seqs: Mapping[str, Sequence[str]],
    items: Sequence[str],
    times: Mapping[str, Sequence[int]] | None,
    scenarios: Mapping[str, Sequence[str]] | None,
    vocab: Mapping[str, int],
    max_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every user's sequence as next-item windows: inputs, targets, gaps, scenarios, int64 (W, max_len) each."""
    row = {item: r for r, item in enumerate(items, start=1)}

    def encoded(user: str, seq: Sequence[str]) -> tuple[list[int], np.ndarray, np.ndarray]:
        n = len(seq)
        ts, sc = (times or {}).get(user), (scenarios or {}).get(user)
        gaps = gap_buckets(ts) if ts is not None and len(ts) == n else np.ones(n, dtype=np.int64)
        ids = scenario_ids(sc, vocab) if sc is not None and len(sc) == n else np.full(n, 1, dtype=np.int64)
        return [row[i] for i in seq], gaps, ids

    windows = _windows((encoded(u, s) for u, s in seqs.items()), max_len)
    if len(windows[0]) == 0:
        raise NotEnoughDataError("no user has two events, so there is no next item to learn")
    return windows


def _new_model(
    items: Sequence[str],
    cfg: TrainConfig,
    n_scenarios: int,
    catalog: Mapping[str, Mapping[str, Any]] | None,
    encode: Callable[[list[str]], np.ndarray] | None,
) -> SASRec:
    """A fresh model over ``items``, its text tower fed the catalog's texts when the config asks for one."""
    text = _text_features(items, catalog, encode) if cfg.model.text and catalog else None
    model = SASRec(len(items), cfg.model, n_scenarios, 0 if text is None else text.shape[1])
    if text is not None:
        model.set_items(text=torch.from_numpy(text))
    return model


def _mark_trained_rows(model: SASRec, windows: tuple[np.ndarray, ...], keep: bool) -> None:
    """Items with training events get an id row; the others (cold) are scored from their text only.

    ``keep``: a warm start keeps its parent's id rows too.
    """
    x, y = windows[0], windows[1]
    has_id = np.zeros(model.n_items + 1, dtype=np.float32)
    has_id[np.unique(y)] = 1.0
    has_id[np.unique(x)] = 1.0
    if keep:
        has_id = np.maximum(has_id, model.has_id.numpy())
    model.set_items(has_id=torch.from_numpy(has_id))


@dataclass(frozen=True)
class _Fit:
    started: float  # perf_counter at the first epoch
    epochs: int
    loss: float
    selected_epoch: int | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)


def _fit(
    model: SASRec,
    windows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cfg: TrainConfig,
    rng: np.random.Generator,
    text_fixed: np.ndarray | None,
    items: list[str],
    seed: int,
    names: list[str],
    on_epoch: Callable[[TrainedModel], None] | None,
    select: Callable[[TrainedModel], float] | None = None,
) -> _Fit:
    """The epochs of Adam on the windows (cosine decay when ``cfg.lr_decay``), with a progress bar.

    ``text_fixed``: bool (N + 1,) rows whose projected text passes no gradient (the calibration items).
    ``select``: see :func:`train`; the best measured weights are loaded back at the end.
    """
    device = torch.device(cfg.device)
    model.to(device)
    fixed = torch.from_numpy(text_fixed).to(device) if text_fixed is not None else None
    xt, yt, gt, ct = (torch.from_numpy(w).to(device) for w in windows)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * -(-len(xt) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cfg.lr_decay else None
    t0 = time.perf_counter()
    loss_value, epoch = float("nan"), 0
    curve: list[tuple[int, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    model.train()
    bar = tqdm(range(1, cfg.epochs + 1), desc="training", unit="epoch", disable=None, leave=False)
    for epoch in bar:
        order = torch.from_numpy(rng.permutation(len(xt))).to(device)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = model.loss(xt[idx], yt[idx], gt[idx], ct[idx], cfg.negatives, fixed)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * len(idx)
        loss_value = total / len(order)
        elapsed = time.perf_counter() - t0
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if epoch == 1 or epoch % 10 == 0 or epoch == cfg.epochs:
            log.info("epoch %3d/%d  loss %.4f  %5.1fs", epoch, cfg.epochs, loss_value, elapsed)
        if on_epoch is not None:
            on_epoch(TrainedModel(model, items, cfg, seed, elapsed, epoch, loss_value, names))
            model.train()
        out_of_time = cfg.max_seconds is not None and elapsed > cfg.max_seconds
        if select is not None and (epoch % max(cfg.validate_every, 1) == 0 or epoch == cfg.epochs or out_of_time):
            score = float(select(TrainedModel(model, items, cfg, seed, elapsed, epoch, loss_value, names)))
            model.train()
            curve.append((epoch, score))
            log.info("epoch %3d/%d  validation %.4f", epoch, cfg.epochs, score)
            if score == score and (best is None or score > best[0]):  # a NaN score is never the best
                best = (score, epoch, copy.deepcopy(model.state_dict()))
        if out_of_time:
            log.info("stopping after %d epochs: max_seconds=%s reached", epoch, cfg.max_seconds)
            break
    bar.close()
    if best is None:
        return _Fit(t0, epoch, loss_value, None, curve)
    model.load_state_dict(best[2])
    return _Fit(t0, epoch, loss_value, best[1], curve)


def _text_features(
    items: Sequence[str],
    catalog: Mapping[str, Mapping[str, Any]],
    encode: Callable[[list[str]], np.ndarray] | None,
) -> np.ndarray | None:
    """Frozen text embeddings of the item index, float32 (N + 1, 384); None if no item has text."""
    from model_export.features import TEXT_DIM
    from model_export.text_embedding import encode_texts
    from streamrec.events import item_text

    encode = encode or encode_texts
    texts = [item_text(catalog[i]) if i in catalog else "" for i in items]
    if not any(texts):
        return None
    out = np.zeros((len(items) + 1, TEXT_DIM), dtype=np.float32)
    have = [r for r, t in enumerate(texts) if t]
    out[[r + 1 for r in have]] = encode([texts[r] for r in have])
    return out


