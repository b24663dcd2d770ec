"""The ONNX scorer runtime: recent item histories -> top-k items, one batched onnxruntime call.

Everything about shapes, padding and the item index comes from the artifact's contract
(:mod:`model_export.artifact`), never from constants here. The graph gives user vectors
(B, d); scores are their dot products with the item matrix (B, N + 1), and the top-k is an
``argpartition`` in numpy.

Execution provider: CUDA when onnxruntime offers it *and* a warm-up run on it succeeds, else
CPU; the one in use is in :attr:`Scorer.provider`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_export.artifact import (
    MODEL_FILE,
    left_pad,
    load_contract,
    read_item_embeddings,
    read_items,
    verify_artifact,
)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# onnxruntime's log severities: 2 = warning (its default), 4 = fatal only.
_ORT_WARNING, _ORT_FATAL = 2, 4

log = logging.getLogger(__name__)


def _session(model_path: Path, probe: np.ndarray, input_name: str, prefer_gpu: bool) -> ort.InferenceSession:
    """A session on CUDA if it really runs there, else on CPU."""
    if prefer_gpu and CUDA in ort.get_available_providers():
        # onnxruntime-gpu logs screens of errors when the CUDA libraries do not load: one line here instead.
        ort.set_default_logger_severity(_ORT_FATAL)
        try:
            sess = ort.InferenceSession(str(model_path), providers=[CUDA, CPU])
            # onnxruntime silently falls back to CPU when the CUDA libraries do not load.
            if sess.get_providers()[0] == CUDA:
                sess.run(None, {input_name: probe})
                return sess
            log.info("CUDA execution provider unavailable (no GPU or CUDA libraries); scoring on CPU")
        except Exception as exc:  # noqa: BLE001 - any CUDA failure means: serve on CPU
            log.warning("CUDA execution provider failed (%s); scoring on CPU", exc)
        finally:
            ort.set_default_logger_severity(_ORT_WARNING)
    return ort.InferenceSession(str(model_path), providers=[CPU])


class Scorer:
    """Scores batches of users' recent items with one model artifact.

    Attributes:
        version: The artifact's ``model_version``.
        provider: The onnxruntime execution provider in use (:data:`CUDA` or :data:`CPU`).
        max_len: Items of a history the model reads (the newest ones).
        contract: The artifact's :class:`~model_export.artifact.ModelContract`.
    """

    def __init__(self, artifact_dir: Path | str, *, prefer_gpu: bool = True, verify: bool = True) -> None:
        """Load an artifact.

        Args:
            artifact_dir: The artifact folder (e.g. ``Registry.path("v0003")``).
            prefer_gpu: Try CUDA first (see the module docstring).
            verify: Check every file's checksum first (a few ms for MovieLens-sized models).

        Raises:
            model_export.errors.ArtifactError: the artifact is incomplete, corrupted or invalid.
        """
        self.path = Path(artifact_dir)
        self.contract = verify_artifact(self.path) if verify else load_contract(self.path)
        c = self.contract
        self.version = c.model_version
        self.max_len = c.max_len
        self._pad = c.padding_id
        self._input = c.inputs[0].name
        self._output = c.outputs[0].name
        items = read_items(self.path, c)
        self._ids: list[str] = [str(i) for i in items[1:]]  # row r is self._ids[r - 1]
        self._row = {item: r for r, item in enumerate(self._ids, start=1)}
        self._emb_t = np.ascontiguousarray(read_item_embeddings(self.path, c).T)  # (d, N + 1)
        # Rows never recommended: padding, plus items outside the live catalog (restrict_to).
        self._blocked = np.zeros(c.n_items + 1, dtype=bool)
        self._blocked[self._pad] = True
        probe = left_pad([[1]], self.max_len, self._pad)
        self._sess = _session(self.path / MODEL_FILE, probe, self._input, prefer_gpu)
        self.provider: str = self._sess.get_providers()[0]

    @property
    def item_ids(self) -> list[str]:
        """Every item the model can score, in row order (row 0, padding, left out)."""
        return list(self._ids)

    def knows(self, item_id: str) -> bool:
        """Whether the model has an embedding for this item."""
        return item_id in self._row

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
        return int((~blocked).sum())

    def user_vectors(self, histories: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[list[int]]]:
        """One onnxruntime call for a batch; unknown ids skipped.

        Returns:
            User vectors float32 (B, d) (rows of empty histories are undefined) and each history's rows.
        """
        rows = [[self._row[i] for i in h if i in self._row] for h in histories]
        if not rows:
            return np.zeros((0, self.contract.embedding_dim), dtype=np.float32), rows
        (vec,) = self._sess.run([self._output], {self._input: left_pad(rows, self.max_len, self._pad)})
        return vec, rows

    def score(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k items for each history, best first.

        Args:
            histories: Each user's recent item ids, oldest first (any length: the newest max_len are read).
            k: Items per user (fewer if fewer are recommendable).
            exclude: Item ids never to return per user; default: the user's own history.

        Returns:
            ``[(item_id, score), ...]`` per user; ``[]`` for a user none of whose items the model
            knows (the caller falls back to popular items).
        """
        if exclude is not None and len(exclude) != len(histories):
            msg = f"exclude has {len(exclude)} entries for {len(histories)} histories"
            raise ValueError(msg)
        if k <= 0 or not histories:
            return [[] for _ in histories]
        vec, rows = self.user_vectors(histories)
        scores = vec @ self._emb_t  # (B, N + 1)
        scores[:, self._blocked] = -np.inf
        for b, h in enumerate(histories):
            banned = h if exclude is None else exclude[b]
            scores[b, [self._row[i] for i in banned if i in self._row]] = -np.inf
        kk = min(k, scores.shape[1])
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # (B, kk), unordered
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = (
            np.take_along_axis(top, order, axis=1),
            np.take_along_axis(top_scores, order, axis=1),
        )
        out: list[list[tuple[str, float]]] = []
        for b in range(len(histories)):
            if not rows[b]:
                out.append([])
                continue
            out.append(
                [
                    (self._ids[r - 1], float(s))
                    for r, s in zip(top[b], top_scores[b], strict=True)
                    if s != -np.inf
                ]
            )
        return out
