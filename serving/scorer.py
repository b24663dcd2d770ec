"""The ONNX scorer runtime: recent item histories -> top-k items, two batched onnxruntime calls.

Everything about shapes, padding and the item index comes from the artifact's contract
(:mod:`model_export.artifact.contract`), never from constants here. The artifact's graph gives user vectors
(B, d); a second graph, built here from the artifact's item matrix, scores them against every item
(B, N + 1) and keeps the top k + (most items one user excludes) per user (MatMul + Add + TopK), so the
score matrix never reaches numpy (its matmul + argpartition copy the whole (B, N + 1) matrix; compare with
``bench/scorer.py``), and it runs on the GPU too. Users are scored in chunks of at most
:data:`MAX_SCORE_BYTES` of scores (:data:`MAX_SCORE_BYTES_CUDA` on a GPU).

Execution provider: CUDA when onnxruntime offers it *and* a warm-up run on it succeeds, else
CPU; the one in use is in :attr:`Scorer.provider`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from model_export.artifact.contract import (
    MODEL_FILE,
    load_contract,
    read_item_embeddings,
    read_items,
    read_text_projection,
    verify_artifact,
)
from model_export.features import scenario_vocab, tower_inputs
from serving.onnx_session import CUDA, inference_session

# Scores one scoring call may hold, (users x (N + 1)) float32: 256 MiB = 67 users of a 1M-item catalog
# (the serve batch, 64, in one call). Larger batches are scored in chunks: 1,024 users x 1M items at once
# would be 4 GiB, and onnxruntime's memory arena keeps ~1.5x the largest call's scores for reuse (without
# the arena every call pays page faults on fresh memory: ~2x slower at 1M items, measured).
MAX_SCORE_BYTES = 256 << 20
# On a GPU (tens of GiB, and each call re-reads the item matrix): 2 GiB = 536 users of a 1M-item catalog.
MAX_SCORE_BYTES_CUDA = 2 << 30
# Names inside the scoring graph (not part of the artifact contract).
_VEC, _ITEMS, _BIAS, _K, _TOP_SCORES, _TOP_ROWS = "user_vector", "item_matrix_t", "bias", "k", "scores", "rows"


# add_items' rows are folded into the item-scoring session once they are this many, and this share of its rows.
COLD_FOLD_MIN = 1024
COLD_FOLD_SHARE = 0.25


def _scoring_graph(n_rows: int, dim: int) -> bytes:
    """The item-scoring graph: user vectors (B, d) -> the k best (scores, rows) per user, best first.

    Inputs: ``user_vector`` float32 (B, d); ``bias`` float32 (n_rows,), 0 or -inf per row (blocked
    rows); ``k`` int64 (1,), at most n_rows. The item matrix ``item_matrix_t`` (d, n_rows) is an
    external initializer, handed to the session from memory (no 256 MB trip through protobuf at 1M
    items). MatMul + Add run as one Gemm (onnxruntime fuses them); TopK puts equal scores in row order,
    as a stable sort would.
    """
    items = TensorProto(name=_ITEMS, data_type=TensorProto.FLOAT, dims=[dim, n_rows])
    items.data_location = TensorProto.EXTERNAL
    items.external_data.add(key="location", value=_ITEMS)
    nodes = [
        helper.make_node("MatMul", [_VEC, _ITEMS], ["dot"]),  # (B, n_rows)
        helper.make_node("Add", ["dot", _BIAS], ["masked"]),  # (B, n_rows)
        helper.make_node("TopK", ["masked", _K], [_TOP_SCORES, _TOP_ROWS], axis=1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes,
        "score_items",
        [
            helper.make_tensor_value_info(_VEC, TensorProto.FLOAT, ["batch", dim]),
            helper.make_tensor_value_info(_BIAS, TensorProto.FLOAT, [n_rows]),
            helper.make_tensor_value_info(_K, TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info(_TOP_SCORES, TensorProto.FLOAT, ["batch", "k"]),
            helper.make_tensor_value_info(_TOP_ROWS, TensorProto.INT64, ["batch", "k"]),
        ],
        [items],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return bytes(model.SerializeToString())


class Scorer:
    """Scores batches of users' recent items with one model artifact.

    Attributes:
        version: The artifact's ``model_version``.
        provider: The onnxruntime execution provider in use (:data:`CUDA` or ``CPUExecutionProvider``).
        max_len: Items of a history the model reads (the newest ones).
        contract: The artifact's :class:`~model_export.artifact.ModelContract`.
        max_score_bytes: Scores one item-scoring call holds at most; larger batches go in chunks of users.
    """

    def __init__(
        self,
        artifact_dir: Path | str,
        *,
        prefer_gpu: bool = True,
        verify: bool = True,
        intra_op_threads: int | None = None,
    ) -> None:
        """Load an artifact.

        Args:
            artifact_dir: The artifact folder (e.g. ``Registry.path("v0003")``).
            prefer_gpu: Try CUDA first (see the module docstring).
            verify: Check every file's checksum first (a few ms for MovieLens-sized models).
            intra_op_threads: onnxruntime threads per call (None: its default, one per physical core).

        Raises:
            model_export.errors.ArtifactError: the artifact is incomplete, corrupted or invalid.
        """
        self.path = Path(artifact_dir)
        self.contract = verify_artifact(self.path) if verify else load_contract(self.path)
        c = self.contract
        self.version = c.model_version
        self.max_len = c.max_len
        self._pad = c.padding_id
        self._inputs = [t.name for t in c.inputs]
        self._output = c.outputs[0].name
        self._vocab = scenario_vocab(c.scenarios)
        items = read_items(self.path, c)
        self._ids: list[str] = [str(i) for i in items[1:]]  # row r is self._ids[r - 1]
        self._row = {item: r for r, item in enumerate(self._ids, start=1)}
        # Rows never recommended: padding, plus items outside the live catalog (restrict_to).
        self._blocked = np.zeros(c.n_items + 1, dtype=bool)
        self._blocked[self._pad] = True
        self._bias = self._blocked_bias()
        self._threads = intra_op_threads
        probe = tower_inputs([[1]], [None], [None], self.max_len, self._vocab, self._inputs)
        self._sess = inference_session(self.path / MODEL_FILE, probe, prefer_gpu, intra_op_threads)
        self.provider: str = self._sess.get_providers()[0]
        self._emb = read_item_embeddings(self.path, c)  # (N + 1, d): the rows the item-scoring session holds
        # Rows add_items gave since the session was built, scored with numpy beside it (transposed, (d, m)):
        # adding an item costs its own row, and the session is rebuilt only when these outgrow COLD_FOLD_SHARE.
        self._cold_t = np.zeros((self._emb.shape[1], 0), dtype=np.float32)
        self._text: tuple[np.ndarray, np.ndarray] | None = read_text_projection(self.path, c)
        self._encoder: Any = None  # serving.text_encoder.TextEncoder, loaded on the first add_items
        self._build_scoring()

    def _build_scoring(self) -> None:
        """(Re)build the item-scoring session over the current item matrix."""
        emb_t = np.ascontiguousarray(self._emb.T)  # (d, rows)
        n_rows, dim = self._emb.shape[0], self._emb.shape[1]
        probe = {
            _VEC: np.zeros((1, dim), dtype=np.float32),
            _BIAS: self._bias,
            _K: np.ones(1, dtype=np.int64),
        }
        self._score_sess = inference_session(
            _scoring_graph(n_rows, dim),
            probe,
            self.provider == CUDA,
            self._threads,
            {_ITEMS: ort.OrtValue.ortvalue_from_numpy(emb_t)},
        )
        self.max_score_bytes = MAX_SCORE_BYTES_CUDA if self._score_sess.get_providers()[0] == CUDA else MAX_SCORE_BYTES

    @property
    def embeds_text(self) -> bool:
        """Whether the artifact can give new items a row from their text (:meth:`add_items`)."""
        return self._text is not None

    def add_items(self, texts: Mapping[str, str]) -> int:
        """Make items the model has not seen recommendable from their text alone (the cold-start path).

        Each item's row is its text embedding (the artifact's encoder) through the artifact's
        projection: the row the trained model gives an item without an id row. Items already known,
        or without text, are skipped. The histories the graph reads still skip these items (its own
        item table is fixed at export); the next trained version learns their ids.

        Args:
            texts: Item id -> text (:func:`streamrec.events.item_text` of its ``items`` record).

        Returns:
            How many items were added.
        """
        new = [(i, t) for i, t in texts.items() if t and i not in self._row]
        if not new or self._text is None:
            return 0
        if self._encoder is None:
            from serving.text_encoder import TextEncoder

            assert self.contract.text_encoder_file is not None
            self._encoder = TextEncoder(
                self.path / self.contract.text_encoder_file,
                prefer_gpu=self.provider == CUDA,
                intra_op_threads=self._threads,
            )
        weight, bias = self._text
        rows = (self._encoder.encode([t for _, t in new]) @ weight + bias).astype(np.float32)  # (m, d)
        for item_id, _ in new:
            self._ids.append(item_id)
            self._row[item_id] = len(self._ids)
        self._cold_t = np.concatenate([self._cold_t, rows.T], axis=1)
        self._blocked = np.concatenate([self._blocked, np.zeros(len(new), dtype=bool)])
        self._bias = self._blocked_bias()
        if self._cold_t.shape[1] > max(COLD_FOLD_MIN, COLD_FOLD_SHARE * self._emb.shape[0]):
            # Geometric: each fold at least grows the session's rows by the share, so folding stays O(total).
            self._emb = np.concatenate([self._emb, self._cold_t.T])
            self._cold_t = self._cold_t[:, :0]
            self._build_scoring()
        return len(new)

    @property
    def item_ids(self) -> list[str]:
        """Every item the model can score, in row order (row 0, padding, left out)."""
        return list(self._ids)

    def knows(self, item_id: str) -> bool:
        """Whether the model has an embedding for this item."""
        return item_id in self._row

    def item_vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """The rows the scorer scores these items with, float32 (len(item_ids), d); zeros for unknown ids.

        A re-ranker that compares candidates (:func:`serving.diversity.mmr_order`) needs the same rows
        the scores came from: the artifact's item embeddings for known items, and the text-only rows
        :meth:`add_items` gave new items (kept beside the session until they are folded in). A zero row
        is similar to nothing, so an id the model does not know never looks like a duplicate.
        """
        rows = np.fromiter((self._row.get(i, 0) for i in item_ids), dtype=np.int64, count=len(item_ids))
        n_rows = self._emb.shape[0]  # the session's rows; add_items' cold rows follow them
        out = np.zeros((len(rows), self._emb.shape[1]), dtype=np.float32)
        known = (rows > 0) & (rows < n_rows)
        out[known] = self._emb[rows[known]]
        cold = rows >= n_rows
        out[cold] = self._cold_t[:, rows[cold] - n_rows].T
        return out

    def restrict_to(self, catalog_ids: Iterable[str] | None) -> int:
        """Recommend only items of the live catalog (None: every known item again).

        Returns:
            How many known items remain recommendable.
        """
        blocked = np.zeros_like(self._blocked)
        if catalog_ids is not None:
            blocked[:] = True
            rows = [self._row[i] for i in catalog_ids if i in self._row]
            blocked[rows] = False
        blocked[self._pad] = True
        self._blocked = blocked
        self._bias = self._blocked_bias()
        return int((~blocked).sum())

    def _merge_cold(
        self, vec: np.ndarray, top_scores: np.ndarray, top: np.ndarray, want: int, n_rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The session's best rows merged with the best cold rows, best first (equal scores in row order)."""
        cold = vec @ self._cold_t + self._bias[n_rows:]  # (b, m)
        take = min(want, cold.shape[1])
        part = np.argpartition(-cold, take - 1, axis=1)[:, :take] if take < cold.shape[1] else None
        cold_rows = part if part is not None else np.broadcast_to(np.arange(cold.shape[1]), cold.shape)
        cold_scores = np.take_along_axis(cold, cold_rows, axis=1)
        scores = np.concatenate([top_scores, cold_scores], axis=1)
        rows = np.concatenate([top, cold_rows + n_rows], axis=1)
        order = np.lexsort((rows, -scores), axis=1)[:, :want]  # by score, then row
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def allow(self, item_ids: Iterable[str]) -> int:
        """Make these known items recommendable too (catalog additions, without rebuilding the mask).

        Returns:
            How many of them the model knows.
        """
        rows = [self._row[i] for i in item_ids if i in self._row]
        self._blocked[rows] = False
        self._bias[rows] = np.float32(0)
        return len(rows)

    def _blocked_bias(self) -> np.ndarray:
        """The scoring graph's ``bias``: float32 (N + 1,), -inf on blocked rows, else 0."""
        return np.where(self._blocked, np.float32(-np.inf), np.float32(0)).astype(np.float32)

    def user_vectors(
        self,
        histories: Sequence[Sequence[str]],
        times: Sequence[Sequence[int]] | None = None,
        scenarios: Sequence[Sequence[str | None]] | None = None,
    ) -> tuple[np.ndarray, list[list[int]]]:
        """One onnxruntime call for a batch; ids the graph does not know are skipped.

        Args:
            histories: Item ids, oldest first.
            times: Their event times (epoch ms), aligned (None: no time-gap information).
            scenarios: Their scenarios, aligned (None: unknown).

        Returns:
            User vectors float32 (B, d) (rows of empty histories are undefined) and each history's rows.
        """
        n_graph = self.contract.n_items  # rows added by add_items are not in the graph's own table
        keep = [[j for j, i in enumerate(h) if self._row.get(i, n_graph + 1) <= n_graph] for h in histories]
        rows = [[self._row[h[j]] for j in kept] for h, kept in zip(histories, keep, strict=True)]
        if not rows:
            return np.zeros((0, self.contract.embedding_dim), dtype=np.float32), rows
        ts = [None if times is None else [times[b][j] for j in kept] for b, kept in enumerate(keep)]
        sc = [None if scenarios is None else [scenarios[b][j] for j in kept] for b, kept in enumerate(keep)]
        feed = tower_inputs(rows, ts, sc, self.max_len, self._vocab, self._inputs)
        (vec,) = self._sess.run([self._output], feed)
        return vec, rows

    def score(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
        times: Sequence[Sequence[int]] | None = None,
        scenarios: Sequence[Sequence[str | None]] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k items for each history, best first.

        Args:
            histories: Each user's recent item ids, oldest first (any length: the newest max_len are read).
            k: Items per user (fewer if fewer are recommendable).
            exclude: Item ids never to return per user; default: the user's own history.
            times: Event times aligned with ``histories`` (epoch ms), for the time-gap input.
            scenarios: Scenarios aligned with ``histories``, for the scenario input.

        Returns:
            ``[(item_id, score), ...]`` per user; ``[]`` for a user none of whose items the model
            knows (the caller falls back to popular items).
        """
        if exclude is not None and len(exclude) != len(histories):
            msg = f"exclude has {len(exclude)} entries for {len(histories)} histories"
            raise ValueError(msg)
        if k <= 0 or not histories:
            return [[] for _ in histories]
        vec, rows = self.user_vectors(histories, times, scenarios)
        return self._top_k(vec, rows, histories, k, exclude)

    def _top_k(
        self,
        vec: np.ndarray,
        rows: list[list[int]],
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Collection[str]] | None,
    ) -> list[list[tuple[str, float]]]:
        """The item-scoring half of :meth:`score`: user vectors (B, d) -> top-k per user."""
        banned = [
            set(rows[b]) if exclude is None else {self._row[i] for i in exclude[b] if i in self._row}
            for b in range(len(histories))
        ]
        # The best k of the items a user may get are among the best k + len(banned) of all items.
        n_rows = self._emb.shape[0]  # the session's rows; the cold ones follow them
        n_cold = self._cold_t.shape[1]
        want = k + max(map(len, banned))
        kk = np.array([min(want, n_rows)], dtype=np.int64)
        chunk = max(1, self.max_score_bytes // (4 * (n_rows + n_cold)))
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(histories), chunk):
            feed = {_VEC: vec[start : start + chunk], _BIAS: self._bias[:n_rows], _K: kk}
            top_scores, top = self._score_sess.run([_TOP_SCORES, _TOP_ROWS], feed)  # (b, kk) each, best first
            if n_cold:
                top_scores, top = self._merge_cold(vec[start : start + chunk], top_scores, top, want, n_rows)
            for b, (row_ids, row_scores) in enumerate(zip(top.tolist(), top_scores.tolist(), strict=True)):
                user = start + b
                recs: list[tuple[str, float]] = []
                if rows[user]:
                    for r, sc in zip(row_ids, row_scores, strict=True):
                        if len(recs) == k or sc == -np.inf:
                            break
                        if r not in banned[user]:
                            recs.append((self._ids[r - 1], sc))
                out.append(recs)
        return out
