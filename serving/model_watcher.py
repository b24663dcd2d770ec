"""The model in service, watched in the registry: a promotion hot-swaps it without pausing the scoring.

The stream's writer (:mod:`jobs.batch_writer`) asks :class:`ServingModel` for the current
:class:`~serving.scorer.Scorer` before every batch; it reads which version is promoted from the model registry
(:mod:`model_export.artifact.registry`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class ServingModel:
    """The promoted model of the registry, re-checked every ``check_every_s``: a promotion hot-swaps it.

    A new version loads in a background thread while the current one keeps scoring, so a swap costs the
    stream no pause; the swap itself is one reference assignment between two batches. A version that
    fails verification (checksum, contract) is refused with an error log, and the model already in
    service keeps serving.
    """

    def __init__(self, registry_dir: str, check_every_s: float, threads: int | None = None) -> None:
        self.registry_dir = registry_dir
        self.check_every_s = check_every_s
        self.threads = threads
        self.scorer: Any = None
        self.version: str | None = None
        self._checked = 0.0
        self._refused: set[str] = set()
        self._loading: threading.Thread | None = None
        self._loaded: tuple[str, Any] | None = None

    def get(self) -> Any:
        """The current Scorer (None while no version is promoted)."""
        self._swap()
        now = time.monotonic()
        if now - self._checked >= self.check_every_s and (self._loading is None or not self._loading.is_alive()):
            self._checked = now
            self._refresh(background=self.scorer is not None)
        return self.scorer

    def _refresh(self, background: bool) -> None:
        from model_export.artifact.registry import Registry
        from model_export.errors import ModelExportError

        try:
            registry = Registry(self.registry_dir)
            version = registry.current()
            path = registry.path(version) if version else None
        except (ModelExportError, OSError, ValueError) as exc:
            log.error("model registry %s unreadable, %s keeps serving: %s", self.registry_dir, self.version, exc)
            return
        if version is None or path is None or version == self.version or version in self._refused:
            return
        if background:
            self._loading = threading.Thread(target=self._load, args=(version, path), daemon=True)
            self._loading.start()
        else:  # nothing serves yet: load now, so the first batch already gets recommendations
            self._load(version, path)
            self._swap()

    def _swap(self) -> None:
        if self._loaded is not None:
            (version, scorer), self._loaded = self._loaded, None
            log.info("model %s now serving (was %s, provider %s)", version, self.version, scorer.provider)
            self.scorer, self.version = scorer, version

    def _load(self, version: str, path: Any) -> None:
        from serving.scorer import Scorer

        try:
            self._loaded = (version, Scorer(path, intra_op_threads=self.threads))
        except Exception as exc:  # noqa: BLE001 - any version that cannot load is refused; the old one serves on
            self._refused.add(version)
            log.error("model %s refused, %s keeps serving: %s", version, self.version, exc)


def load_version(registry_dir: str, version: str, threads: int | None = None) -> Any:
    """The Scorer of one registry version, whatever is promoted (an experiment arm's model).

    Raises:
        model_export.errors.ModelExportError: no such version, or it fails verification.
        OSError: the registry cannot be read.
    """
    from model_export.artifact.registry import Registry
    from serving.scorer import Scorer

    return Scorer(Registry(registry_dir).path(version), intra_op_threads=threads)

