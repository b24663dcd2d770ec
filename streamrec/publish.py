"""Put a model version in front of users: register it in the registry, promote it, announce it in Redis.

``streamrec train --promote`` and ``streamrec demo`` go through :func:`publish`; the periodic trainer registers
and promotes its candidates itself and, like ``streamrec models promote|rollback``, announces with :func:`announce`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from model_export.artifact.registry import Registry
from model_export.data.event_log import popular_items
from serving.store import announce_model, connect, write_popular
from streamrec.config import Settings, secret_value

# Items of the `popular` fallback (unknown users), from the events the model was trained on.
POPULAR_K = 100

log = logging.getLogger(__name__)

Events = Sequence[dict[str, Any]]


def registry(settings: Settings) -> Registry:
    """The model registry of the configuration (``models.registry_dir``)."""
    return Registry(settings.path(settings.models.registry_dir))


def announce(settings: Settings, version: str, events: Events | None = None) -> None:
    """Tell front-ends which version serves (``model:current``) and, from its training events, ``popular``.

    Skipped with a warning if Redis is down: the job reads the registry itself.

    Args:
        settings: Where Redis is.
        version: The version in service.
        events: The events the version was trained on: the ``popular`` fallback is their
            :data:`POPULAR_K` most interacted items (None: ``popular`` stays as it is).
    """
    popular = popular_items(events, POPULAR_K) if events is not None else None
    r = settings.redis
    try:
        client = connect(r.url, r.username, secret_value(r.password))
        announce_model(client, version)
        if popular:
            write_popular(client, popular, version, int(time.time() * 1000))
    except redis.RedisError as exc:
        log.warning("note: model:current not updated in Redis (%s); the job reads the registry itself", exc)


def publish(settings: Settings, artifact: Path, *, promote: bool = False, events: Events | None = None) -> str:
    """Register an artifact and, with ``promote``, put it in service and announce it; returns its version.

    Args:
        settings: The registry (``models.registry_dir``) and Redis of the configuration.
        artifact: An exported artifact folder (the registry verifies it first).
        promote: Put the version in service, then announce it (:func:`announce`).
        events: The events the version was trained on, for the ``popular`` fallback.

    Raises:
        model_export.errors.ArtifactError: the registry refuses the artifact or the promotion.
    """
    reg = registry(settings)
    version = reg.publish(artifact)
    if promote:
        reg.promote(version)
        announce(settings, version, events)
    return version
