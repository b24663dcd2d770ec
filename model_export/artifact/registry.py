"""A folder model registry: verified artifacts as ``<root>/v0001/``, ``v0002/``, ... and a promotion log.

Layout::

    <root>/v0001/            an artifact (see model_export.artifact.contract), contract stamped with "v0001"
    <root>/registry.json     {"promoted": ["v0001", "v0003"], "history": [{"action", "version", "ts"}, ...]}

``promoted`` is a stack: its top is the version in service; :meth:`Registry.rollback` pops it.
``history`` keeps every promotion and rollback. The state file is replaced atomically (temp file
+ ``os.replace``), and a version folder appears by an atomic rename of a complete copy, so readers
never see half a version. Promotions assume one writer at a time (the trainer or an operator).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from model_export.artifact.contract import atomic_write_text, load_contract, verify_artifact, write_contract
from model_export.errors import ArtifactError, RegistryError

STATE_FILE = "registry.json"
_VERSION = re.compile(r"^v(\d{4,})$")  # zero-padded so that string order is numeric order


def _version_name(n: int) -> str:
    return f"v{n:04d}"


class Registry:
    """The model registry rooted at one folder (created on first publish)."""

    def __init__(self, root: Path | str) -> None:
        """Open the registry at ``root`` (e.g. ``models/``)."""
        self.root = Path(root)

    # -- versions -------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def path(self, version: str) -> Path:
        """The artifact folder of a version (``"latest"``: the newest published)."""
        version = self._resolve(version)
        return self.root / version

    def publish(self, artifact_dir: Path | str) -> str:
        """Verify an artifact and copy it in as the next version; it is not promoted.

        The copy's contract gets ``model_version`` = the registry version (its other fields and
        its file checksums are unchanged).

        Returns:
            The new version, e.g. ``"v0003"``.

        Raises:
            ArtifactError: the artifact fails :func:`~model_export.artifact.verify_artifact`.
        """
        verify_artifact(artifact_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".publish-"))
        try:
            staged = tmp / "artifact"
            shutil.copytree(artifact_dir, staged)
            while True:
                existing = self.versions()
                version = _version_name(int(existing[-1][1:]) + 1 if existing else 1)
                write_contract(staged, replace(load_contract(staged), model_version=version))
                try:
                    staged.rename(self.root / version)  # fails if a concurrent publish took the name
                    break
                except OSError:
                    if not (self.root / version).exists():
                        raise
            verify_artifact(self.root / version)
            return version
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def list_versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first: ``{"version", "path", "parent", "metrics", "promoted"}``.

        ``promoted`` is True for the version in service (:meth:`current`) only.
        """
        current = self.current()
        out = []
        for version in self.versions():
            path = self.root / version
            try:
                contract = load_contract(path)
                parent, metrics = contract.parent, contract.metrics
            except ArtifactError:  # listed anyway, so that an operator sees and removes it
                parent, metrics = None, {}
            out.append(
                {
                    "version": version,
                    "path": str(path),
                    "parent": parent,
                    "metrics": metrics,
                    "promoted": version == current,
                }
            )
        return out

    # -- promotion ------------------------------------------------------------------------------

    def current(self) -> str | None:
        """The version in service, or None before the first promotion."""
        stack = self._state()["promoted"]
        return stack[-1] if stack else None

    def history(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first: ``{"action", "version", "ts"}`` (ts epoch ms)."""
        return list(self._state()["history"])

    def promote(self, version: str = "latest") -> str:
        """Put a version in service (``"latest"``: the newest published); it is verified first.

        Returns:
            The promoted version.

        Raises:
            RegistryError: no such version.
            ArtifactError: its files no longer match its contract.
        """
        version = self._resolve(version)
        verify_artifact(self.root / version)
        state = self._state()
        if state["promoted"][-1:] != [version]:
            state["promoted"].append(version)
        self._log(state, "promote", version)
        return version

    def rollback(self) -> str:
        """Go back to the version promoted before the current one.

        Returns:
            The version now in service.

        Raises:
            RegistryError: fewer than two promotions to go back through.
        """
        state = self._state()
        if len(state["promoted"]) < 2:
            raise RegistryError(
                self.root, "no earlier promoted version to roll back to", "promote a version first"
            )
        state["promoted"].pop()
        version = state["promoted"][-1]
        self._log(state, "rollback", version)
        return str(version)

    # -- internals ------------------------------------------------------------------------------

    def _resolve(self, version: str) -> str:
        versions = self.versions()
        if version == "latest":
            if not versions:
                raise RegistryError(
                    self.root,
                    "no version published",
                    "publish an artifact with `streamrec models register DIR`",
                )
            return versions[-1]
        if version not in versions:
            raise RegistryError(
                self.root, f"no version {version!r}", "list them with `streamrec models list`"
            )
        return version

    def _state(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        if not path.exists():
            return {"promoted": [], "history": []}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(
                self.root, f"{STATE_FILE} is unreadable ({exc})", "restore it from a backup"
            ) from exc
        return {"promoted": list(state.get("promoted", [])), "history": list(state.get("history", []))}

    def _log(self, state: dict[str, Any], action: str, version: str) -> None:
        state["history"].append({"action": action, "version": version, "ts": int(time.time() * 1000)})
        atomic_write_text(self.root / STATE_FILE, json.dumps(state, indent=2) + "\n")
