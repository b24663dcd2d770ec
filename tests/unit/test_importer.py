"""`streamrec import`: CSV, JSON lines and Parquet read as streams, columns mapped, the contract's verdict by line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamrec import cli
from streamrec.events import Event
from streamrec.importer import (
    EXIT_REJECTED,
    EXIT_UNUSABLE,
    ImportInputError,
    ImportOptions,
    _RowError,
    epoch_ms,
    import_files,
)

T0 = 1_700_000_000  # epoch seconds


class Collect:
    """A sink that keeps what it is sent (the producer SDK's sending methods)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.items: list[dict[str, Any]] = []
        self.flushes = 0

    def send(self, event: Event) -> Event:
        self.events.append(event)
        return event

    def send_item(self, item: dict[str, Any]) -> None:
        self.items.append(dict(item))

    def flush(self) -> None:
        self.flushes += 1


def run(options: ImportOptions, sink: Collect | None = None) -> tuple[list, list]:
    rejected: list = []
    reports = import_files(options, sink, rejected.append)
    return reports, rejected


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_maps_columns_and_reports_bad_rows_by_line(tmp_path):
    events = write(
        tmp_path / "log.csv",
        "uid,sku,when,action,stars,surface,eid,note\n"
        f"u1,i1,{T0},click,4.5,web,e1,x\n"  # line 2
        f"u2,i2,{T0 + 1},teleport,,app,,\n"  # line 3: an unknown type
        f'"u\n3",i3,{T0 + 2},view,,,,\n'  # line 4-5: a control character in the id (the row starts on line 4)
        f"u4,i4,{T0 + 3},purchase,many,,,\n"  # line 6: value is not a number
        f"u5,,{T0 + 4},click,,,,\n"  # line 7: empty item id
        "u6,i6\n"  # line 8: too few fields
        "\n"  # line 9: blank, no row
        f"u7,i7,{T0 + 5},forget,,,,\n",  # line 10: forget records are not imported
    )
    columns = {"user_id": "uid", "item_id": "sku", "ts": "when", "type": "action", "value": "stars",
               "scenario": "surface", "event_id": "eid"}
    sink = Collect()
    reports, rejected = run(ImportOptions(events, event_columns=columns, ts_unit="s"), sink)

    assert [e.to_dict() for e in sink.events] == [
        {"user_id": "u1", "item_id": "i1", "type": "click", "ts": T0 * 1000, "value": 4.5, "scenario": "web",
         "event_id": "e1"}
    ]
    assert [(r.line, r.reason.split(",")[0]) for r in rejected] == [
        (3, "field 'type' must be one of ['cart'"),
        (4, "field 'user_id' contains control characters"),
        (6, "field 'value' must be a finite number"),
        (7, "field 'item_id' must not be empty"),
        (8, "has 2 fields"),
        (10, "type 'forget' is not imported: `streamrec users forget USER_ID` sends it"),
    ]
    assert rejected[0].raw["action"] == "teleport" and rejected[4].raw == ["u6", "i6"]
    (report,) = reports
    assert (report.read, report.valid, report.sent, report.rejected) == (7, 1, 1, 6)
    assert sum(report.by_reason.values()) == 6


def test_default_columns_are_our_field_names_and_dry_run_sends_nothing(tmp_path):
    events = write(tmp_path / "e.csv", f"user_id,item_id,ts,type,value\n1,2,{T0 * 1000},rating,3\n")
    reports, rejected = run(ImportOptions(events), None)
    assert rejected == [] and (reports[0].valid, reports[0].sent) == (1, 0)


def test_json_lines_ids_as_strings_and_broken_lines_by_number(tmp_path):
    events = write(
        tmp_path / "log.jsonl",
        json.dumps({"u": 7, "i": 8, "t": "2024-01-02T03:04:05Z", "extra": [1]}) + "\n"  # line 1
        "\n"  # line 2: blank
        "{not json\n"  # line 3
        "[1, 2]\n"  # line 4
        + json.dumps({"u": "a", "i": "b", "t": "yesterday"}) + "\n"  # line 5
        + json.dumps({"u": "a", "i": "b", "t": 1.5e12, "value": "NaN"}) + "\n",  # line 6: value no number
    )
    sink = Collect()
    _, rejected = run(
        ImportOptions(events, event_columns={"user_id": "u", "item_id": "i", "ts": "t"}, type_constant="view"), sink
    )
    ts = int(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000)
    assert [e.to_dict() for e in sink.events] == [{"user_id": "7", "item_id": "8", "type": "view", "ts": ts}]
    assert [(r.line, r.reason[:40]) for r in rejected] == [
        (3, "not JSON: Expecting property name enclos"),
        (4, "not a JSON object: list"),
        (5, "field 'ts' is neither a number (epoch ms"),
        (6, "field 'value' must be a finite number"),
    ]


def test_timestamps_in_seconds_milliseconds_and_iso():
    assert epoch_ms("1700000000", "s") == 1_700_000_000_000
    assert epoch_ms("1700000000.25", "s") == 1_700_000_000_250
    assert epoch_ms(1_700_000_000_123, "ms") == 1_700_000_000_123
    assert epoch_ms(" 1700000000123 ", "ms") == 1_700_000_000_123
    assert epoch_ms("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert epoch_ms("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert epoch_ms("2023-11-14 22:13:20") == 1_700_000_000_000  # no offset: UTC
    assert epoch_ms(datetime(2023, 11, 14, 22, 13, 20)) == 1_700_000_000_000  # noqa: DTZ001 - a naive Parquet time
    assert epoch_ms("") is None
    with pytest.raises(_RowError, match="neither a number"):
        epoch_ms("14/11/2023")
    with pytest.raises(_RowError, match="finite"):
        epoch_ms("inf", "s")


def test_negative_or_future_times_are_the_contracts_call(tmp_path):
    events = write(tmp_path / "e.csv", "user_id,item_id,ts,type\n1,2,-5,click\n1,2,9999999999999,click\n")
    _, rejected = run(ImportOptions(events, ts_unit="s"))
    assert [(r.line, "negative or more than a day in the future" in r.reason) for r in rejected] == [
        (2, True), (3, True)
    ]


def test_items_categories_and_attributes(tmp_path):
    items = write(
        tmp_path / "items.csv",
        "sku,name,genres,blurb,year,brand\n"
        "i1,Alpha,a| b ||c,the first,1999,acme\n"
        "i2,,x,,,\n",  # line 3: no title
    )
    events = write(tmp_path / "e.csv", f"user_id,item_id,ts,type\nu,i1,{T0 * 1000},click\n")
    sink = Collect()
    reports, rejected = run(
        ImportOptions(events, items, item_columns={"item_id": "sku", "title": "name", "categories": "genres",
                                                   "text": "blurb"}),
        sink,
    )
    assert sink.items == [{"item_id": "i1", "title": "Alpha", "ts": 0, "categories": ["a", "b", "c"],
                           "attributes": {"year": "1999", "brand": "acme"}, "text": "the first"}]
    assert [(r.kind, r.line, r.reason[:15]) for r in rejected] == [("items", 3, "field 'title' m")]
    assert [r.kind for r in reports] == ["items", "events"] and len(sink.events) == 1


def test_bytes_that_are_not_utf8_reject_their_row_only(tmp_path):
    events = tmp_path / "e.csv"
    events.write_bytes(b"user_id,item_id,ts,type\nok,1,1000,click\nbad\xff,1,1000,click\nok2,1,1000,click\n")
    sink = Collect()
    _, rejected = run(ImportOptions(events), sink)
    assert [e.user_id for e in sink.events] == ["ok", "ok2"]
    assert [(r.line, "lone surrogate" in r.reason) for r in rejected] == [(3, True)]


def test_parquet_rows_are_numbered_and_timestamps_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    when = [datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), None, datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)]
    table = pa.table({"user": [1, 2, 3], "item": ["a", "b", "c"], "at": pa.array(when, pa.timestamp("ms", "UTC"))})
    path = tmp_path / "log.parquet"
    pq.write_table(table, path, row_group_size=2)
    sink = Collect()
    _, rejected = run(
        ImportOptions(path, event_columns={"user_id": "user", "item_id": "item", "ts": "at"}, type_constant="click",
                      batch_rows=2),
        sink,
    )
    assert [(e.user_id, e.ts) for e in sink.events] == [("1", 1_700_000_000_000), ("3", 1_700_000_001_000)]
    assert [(r.line, r.reason) for r in rejected] == [(2, "field 'ts' must be an integer (epoch milliseconds)")]
    assert sink.flushes == 2


def test_batches_flush_the_producer(tmp_path):
    rows = "".join(f"u{n},i{n},{T0 * 1000 + n},click\n" for n in range(5))
    events = write(tmp_path / "e.csv", "user_id,item_id,ts,type\n" + rows)
    sink = Collect()
    run(ImportOptions(events, batch_rows=2), sink)
    assert len(sink.events) == 5 and sink.flushes == 3


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("user_id,item_id,when,type\n", {}, "no column 'ts' (give --ts-col COLUMN)"),
        ("user_id,item_id,ts,type\n", {"event_columns": {"value": "stars"}}, "no column 'stars' (value: --value-col)"),
        ("user_id,item_id,ts\n", {}, "no column 'type' (give --type-col COLUMN)"),
        ("", {}, "empty: no header line"),
        ("user_id,user_id,item_id,ts,type\n", {}, "repeats the column(s) 'user_id'"),
    ],
)
def test_unusable_input_raises_before_anything_is_sent(tmp_path, text, options, message):
    events = write(tmp_path / "e.csv", text + f"1,2,{T0 * 1000},click\n" if text else "")
    sink = Collect()
    with pytest.raises(ImportInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(ImportOptions(events, **options), sink)
    assert sink.events == [] and sink.flushes == 0


def test_cli_exit_statuses_stderr_and_rejects_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STREAMREC_CONFIG", raising=False)
    good = write(tmp_path / "good.tsv", f"user_id\titem_id\tts\ttype\n1\t2\t{T0 * 1000}\tclick\n")
    assert cli.main(["import", "--events", str(good), "--dry-run"]) == 0
    assert "1 rows read, 1 valid (dry run: nothing sent), 0 rejected" in capsys.readouterr().out

    bad = write(tmp_path / "bad.txt", f"user_id,item_id,ts,type\n1,2,{T0 * 1000},click\n1,,{T0 * 1000},click\n")
    rejects = tmp_path / "rejects.jsonl"
    code = cli.main(["import", "--events", str(bad), "--format", "csv", "--dry-run", "--json",
                     "--rejects", str(rejects)])
    out = capsys.readouterr()
    assert code == EXIT_REJECTED
    summary = json.loads(out.out)
    assert summary["dry_run"] is True and summary["items"] is None
    assert {k: summary["events"][k] for k in ("read", "valid", "sent", "rejected")} == {
        "read": 2, "valid": 1, "sent": 0, "rejected": 1
    }
    assert summary["events"]["by_reason"] == {"field 'item_id' must not be empty": 1}
    assert f"{bad}:3: rejected: field 'item_id' must not be empty" in out.err
    (line,) = rejects.read_text().splitlines()
    assert json.loads(line) == {"file": str(bad), "line": 3, "reason": "field 'item_id' must not be empty",
                                "row": {"user_id": "1", "item_id": "", "ts": str(T0 * 1000), "type": "click"}}

    assert cli.main(["import", "--events", str(bad), "--dry-run"]) == EXIT_UNUSABLE  # .txt: which format?
    assert "give --format" in capsys.readouterr().err
    assert cli.main(["import", "--events", str(tmp_path / "absent.csv"), "--dry-run"]) == EXIT_UNUSABLE
    assert "absent.csv: no such file" in capsys.readouterr().err
    assert cli.main(["import", "--events", str(good), "--user-col", "uid", "--dry-run"]) == EXIT_UNUSABLE
    assert "no column 'uid' (user_id: --user-col)" in capsys.readouterr().err


def test_eval_takes_a_data_set_or_the_event_log_not_both():
    parser = cli.build_parser()
    assert parser.parse_args(["eval", "--from-kafka"]).from_kafka is True
    assert parser.parse_args(["eval", "--dataset", "ml-100k"]).dataset == "ml-100k"
    for argv in (["eval"], ["eval", "--dataset", "ml-100k", "--from-kafka"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2


def test_our_own_record_format_imports_without_flags(tmp_path):
    event = {"user_id": "u", "item_id": "i", "type": "cart", "ts": T0 * 1000, "value": 2.0, "scenario": "app",
             "context": {"page": 3}, "event_id": "e-1"}
    item = {"item_id": "i", "title": "Eye", "text": "an eye", "categories": ["a"], "attributes": {"year": 2001},
            "ts": 5, "brand": "acme"}
    events = write(tmp_path / "events.ndjson", json.dumps(event) + "\n")
    items = write(tmp_path / "items.json", json.dumps(item) + "\n")
    sink = Collect()
    _, rejected = run(ImportOptions(events, items), sink)
    assert rejected == []
    assert [e.to_dict() for e in sink.events] == [event]
    assert sink.items == [{"item_id": "i", "title": "Eye", "ts": 5, "categories": ["a"],
                           "attributes": {"year": 2001, "brand": "acme"}, "text": "an eye"}]


def test_a_csv_context_cell_is_a_json_object(tmp_path):
    events = write(tmp_path / "e.csv", 'user_id,item_id,ts,type,context\nu,i,1,click,"{""a"": 1}"\nu,i,1,click,x\n')
    sink = Collect()
    _, rejected = run(ImportOptions(events), sink)
    assert [e.context for e in sink.events] == [{"a": 1}]
    assert [(r.line, r.reason) for r in rejected] == [(3, "field 'context' must be a JSON object")]
