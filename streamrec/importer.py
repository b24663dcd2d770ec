"""``streamrec import``: a team's own event log (and catalog) from a file into the ``events`` and ``items`` topics.

    streamrec import --events FILE [--items FILE] [--format csv|tsv|parquet|jsonl] [--dry-run] [--json]
        [--rejects FILE] [--user-col C] [--item-col C] [--ts-col C] [--ts-unit ms|s] [--type-col C | --type T]
        [--value-col C] [--scenario-col C] [--event-id-col C] [--context-col C]
        [--item-id-col C] [--title-col C] [--text-col C] [--categories-col C] [--categories-sep S] [--item-ts-col C]

The format comes from the extension (``.csv``, ``.tsv``, ``.parquet``/``.pq``, ``.jsonl``/``.ndjson``/``.json``,
and ``.gz`` on top of the text formats) unless ``--format`` names it (for both files). A column flag names the
file's column for one of our fields; without it the column of the field's own name is used (``user_id``,
``item_id``, ``ts``, ``type``, ``value``, ``scenario``, ``event_id``, ``context``; for items ``item_id``, ``title``,
``text``, ``categories``, ``ts``), the optional ones only where the file has it, so files in our own record
format need no flags. JSON lines have no header: their columns are the keys of the first :data:`BATCH_ROWS`
rows. ``ts``: a number is epoch ``--ts-unit`` (ms, or s), any other string an ISO-8601 time (UTC when it has no
offset), a Parquet timestamp is taken as it is (UTC when naive). An item's other columns go into its
``attributes`` (CSV values stay strings); an event's other columns are not sent. A CSV ``context`` cell holds a
JSON object.

Every row is checked by the event contract (:func:`streamrec.events.parse_event`, :func:`~streamrec.events.parse_item`:
the stream's, the SDK's and the API's one rule set). The good rows go out through the producer SDK
(:class:`jobs.producer.EventProducer`: key = user id, item id), the catalog first, in file order, in batches of
:data:`BATCH_ROWS` rows; files are read as streams, never whole. Each rejected row is reported with its line
(1-based; the header is line 1 of a CSV, the row number stands for the line in Parquet) and its reason, on stderr
and in ``--rejects FILE`` (JSON lines ``{"file", "line", "reason", "row"}``). Records of type ``forget`` are
refused: ``streamrec users forget`` sends those.

Exit status: 0 every row sent (valid, with ``--dry-run``); :data:`EXIT_REJECTED` (3) some rows rejected, the others
sent; 2 unusable input (a missing file or column, an unknown format, an unreadable line: nothing is sent when a
column is missing; the rows before an unreadable line are); 1 Kafka failed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import IO, Any, Protocol

from streamrec.config import Settings
from streamrec.events import EVENT_TYPES, FORGET, IMPRESSION, Event, InvalidRecordError, parse_event, parse_item

# Rows validated and sent between two flushes of the producer (and read per Parquet batch).
BATCH_ROWS = 10_000
EXIT_REJECTED = 3
EXIT_UNUSABLE = 2
FORMATS = ("csv", "tsv", "parquet", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
               ".ndjson": "jsonl", ".json": "jsonl"}
# Our field -> (its column flag, required). A flag that names a column the file lacks is an error, optional or not.
EVENT_FIELDS: dict[str, tuple[str, bool]] = {
    "user_id": ("--user-col", True), "item_id": ("--item-col", True), "ts": ("--ts-col", True),
    "type": ("--type-col", True), "value": ("--value-col", False), "scenario": ("--scenario-col", False),
    "event_id": ("--event-id-col", False), "context": ("--context-col", False),
}
ITEM_FIELDS: dict[str, tuple[str, bool]] = {
    "item_id": ("--item-id-col", True), "title": ("--title-col", True), "text": ("--text-col", False),
    "categories": ("--categories-col", False), "ts": ("--item-ts-col", False),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Masks the values inside a reason, so that rows failing the same way count under one reason in the summary.
_REASON_VALUES = re.compile(r"(?<=got )(['\"]).*\1$|(?<![\w-])-?\d+(?:\.\d+)?(?![\w-])")


class ImportInputError(Exception):
    """Input ``streamrec import`` cannot use (exit 2): a missing file or column, an unknown format, a broken line."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


class _RowError(Exception):
    """A row whose value cannot be mapped onto our field (e.g. a ``ts`` that is no time)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Sink(Protocol):
    """Where the good rows go: :class:`jobs.producer.EventProducer`'s sending methods."""

    def send(self, event: Event) -> Event: ...

    def send_item(self, item: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a file: its line (1-based), its values by column, or why the line is no row."""

    line: int
    values: dict[str, Any] | None
    raw: Any
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that was not sent, with its line and reason."""

    kind: str  # "events" | "items"
    path: Path
    line: int
    reason: str
    raw: Any

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "line": self.line, "reason": self.reason, "row": self.raw}


@dataclass
class FileReport:
    """What became of one file's rows; ``by_reason`` counts the rejections by their reason, values masked."""

    kind: str
    path: Path
    read: int = 0
    valid: int = 0
    sent: int = 0
    rejected: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.by_reason[reason_group(reason)] += 1

    def to_dict(self) -> dict[str, Any]:
        counts = {"read": self.read, "valid": self.valid, "sent": self.sent, "rejected": self.rejected}
        return {"file": str(self.path), **counts, "by_reason": dict(self.by_reason.most_common())}


@dataclass(frozen=True)
class ImportOptions:
    """One import: the files, the format, and the file's column for each of our fields.

    Attributes:
        events: The events file.
        items: The catalog file, sent before the events; None for none.
        fmt: One of :data:`FORMATS` for both files; None: from each file's extension.
        event_columns: Our event field -> the file's column, as the flags name them (the others: the field's name).
        item_columns: The same for the items file.
        ts_unit: ``ms`` or ``s``, the unit of numeric times.
        type_constant: The type of every event, instead of a column.
        categories_sep: What separates an item's categories in one string.
        batch_rows: Rows between two producer flushes.
    """

    events: Path
    items: Path | None = None
    fmt: str | None = None
    event_columns: Mapping[str, str] = field(default_factory=dict)
    item_columns: Mapping[str, str] = field(default_factory=dict)
    ts_unit: str = "ms"
    type_constant: str | None = None
    categories_sep: str = "|"
    batch_rows: int = BATCH_ROWS


def reason_group(reason: str) -> str:
    """A reason with its numbers and quoted values masked: ``field 'ts' -5 is negative`` -> ``field 'ts' N is ...``."""
    return _REASON_VALUES.sub(lambda m: "..." if m.group(1) else "N", reason)


# ---- reading the files: each a stream of rows ----


def file_format(path: Path, fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` if given, else from its extension (``.gz`` looked through)."""
    if fmt:
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    found = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if found is None or (found == "parquet" and path.suffix.lower() == ".gz"):
        raise ImportInputError(path, f"cannot tell the format from the name; give --format {'|'.join(FORMATS)}")
    return found


class Table:
    """A file's columns and a fresh stream of its rows at every :meth:`rows` call."""

    def __init__(self, path: Path, fmt: str | None = None, peek_rows: int = BATCH_ROWS) -> None:
        self.path, self.format = path, file_format(path, fmt)
        if not path.is_file():
            raise ImportInputError(path, "no such file")
        if self.format == "parquet":
            self._parquet = _parquet_file(path)
            self.columns = frozenset(self._parquet.schema_arrow.names)
        elif self.format == "jsonl":
            # JSON lines have no header: the columns are the keys the first rows have.
            first = self._jsonl_rows()
            try:
                self.columns = frozenset(k for row in islice(first, peek_rows) if row.values for k in row.values)
            finally:
                first.close()
        else:
            self.columns = frozenset(self._csv_header())

    def rows(self, wanted: Iterable[str] | None = None) -> Iterator[Row]:
        """Every row in file order (Parquet reads only the ``wanted`` columns when given)."""
        if self.format == "parquet":
            return self._parquet_rows(None if wanted is None else sorted(set(wanted)))
        return self._jsonl_rows() if self.format == "jsonl" else self._csv_rows()

    def _open(self) -> IO[str]:
        # Bytes that are not UTF-8 become lone surrogates: the contract refuses the row that holds them, by line.
        try:
            if self.path.suffix.lower() == ".gz":
                return gzip.open(self.path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
            return self.path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
        except OSError as exc:
            raise ImportInputError(self.path, f"cannot read: {exc.strerror or exc}") from exc

    def _broken(self, line: int, exc: Exception) -> ImportInputError:
        return ImportInputError(self.path, f"unreadable at line {line}: {exc}")

    def _csv_header(self) -> list[str]:
        with self._open() as f:
            try:
                header = next(csv.reader(f, delimiter="\t" if self.format == "tsv" else ","), None)
            except (csv.Error, OSError, EOFError) as exc:
                raise self._broken(1, exc) from exc
        if not header:
            raise ImportInputError(self.path, "empty: no header line")
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise ImportInputError(self.path, f"the header repeats the column(s) {', '.join(map(repr, repeated))}")
        return header

    def _csv_rows(self) -> Iterator[Row]:
        with self._open() as f:
            reader = csv.reader(f, delimiter="\t" if self.format == "tsv" else ",")
            start = 1  # the line the next record starts on (a quoted field may span lines)
            try:
                header = next(reader, None) or []
                start = reader.line_num + 1
                for fields in reader:
                    line, start = start, reader.line_num + 1
                    if not fields:
                        continue  # a blank line is no row
                    if len(fields) != len(header):
                        yield Row(line, None, fields, f"has {len(fields)} fields, the header {len(header)}")
                        continue
                    values = dict(zip(header, fields, strict=True))
                    yield Row(line, values, values)
            except (csv.Error, OSError, EOFError) as exc:  # EOFError: a truncated .gz
                raise self._broken(start, exc) from exc

    def _jsonl_rows(self) -> Generator[Row, None, None]:
        with self._open() as f:
            line = 0
            try:
                for line, text in enumerate(f, 1):
                    if not text.strip():
                        continue
                    try:
                        obj = json.loads(text)
                    except (ValueError, RecursionError) as exc:
                        yield Row(line, None, text.rstrip("\r\n"), f"not JSON: {exc}")
                        continue
                    if not isinstance(obj, dict):
                        yield Row(line, None, obj, f"not a JSON object: {type(obj).__name__}")
                        continue
                    yield Row(line, obj, obj)
            except (OSError, EOFError) as exc:
                raise self._broken(line + 1, exc) from exc

    def _parquet_rows(self, columns: list[str] | None) -> Iterator[Row]:
        import pyarrow as pa

        line = 0
        try:
            for batch in self._parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                for values in batch.to_pylist():
                    line += 1
                    yield Row(line, values, values)
        except (pa.ArrowException, OSError) as exc:
            raise self._broken(line + 1, exc) from exc


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportInputError(path, "reading Parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportInputError(path, f"not a readable Parquet file: {exc}") from exc


def resolve_columns(
    table: Table, fields: Mapping[str, tuple[str, bool]], named: Mapping[str, str], skip: Iterable[str] = ()
) -> dict[str, str]:
    """Our field -> the file's column; raises ImportInputError naming every column that is not there."""
    out: dict[str, str] = {}
    missing: list[str] = []
    for name, (flag, required) in fields.items():
        if name in skip:
            continue
        column = named.get(name) or name
        if column in table.columns:
            out[name] = column
        elif name in named or required:
            missing.append(f"{column!r} ({name}: {flag})" if name in named else f"{column!r} (give {flag} COLUMN)")
    if missing:
        have = ", ".join(map(repr, sorted(table.columns)[:30])) or "none"
        raise ImportInputError(table.path, f"no column {'; no column '.join(missing)}; its columns: {have}")
    return out


# ---- mapping a row onto a record, and the contract's verdict ----


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _datetime_ms(value: datetime) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (aware - _EPOCH) // _MS


def epoch_ms(value: Any, unit: str = "ms") -> Any:
    """An event time as epoch ms: numbers (or numeric strings) in ``unit`` (``ms``/``s``), ISO-8601 strings, datetimes.

    Naive times are UTC. An empty value becomes None and other types pass unchanged: the contract says why they
    are no ``ts``.

    Raises:
        _RowError: a string that is neither a number nor an ISO-8601 time, or a number that is not finite.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _datetime_ms(value)
    if isinstance(value, date):
        return _datetime_ms(datetime.combine(value, clock_time(), tzinfo=UTC))
    if isinstance(value, str):
        number = _number(value.strip())
        if number is None:
            try:
                return _datetime_ms(datetime.fromisoformat(value.strip()))
            except ValueError:
                msg = f"field 'ts' is neither a number (epoch {unit}) nor an ISO-8601 time, got {value!r:.60}"
                raise _RowError(msg) from None
        value = number
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value * 1000 if unit == "s" else value
    if isinstance(value, float | Decimal):
        if not math.isfinite(value):
            raise _RowError("field 'ts' must be a finite number")
        return round(value * 1000) if unit == "s" else round(value)
    return value


def _id(value: Any) -> Any:
    """Integer ids (JSON, Parquet) as strings; anything else as it is, for the contract to judge."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _json_default(value: Any) -> Any:
    """Parquet's Python values that JSON lacks."""
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode(errors="surrogateescape")
    msg = f"a {type(value).__name__} value has no JSON form"
    raise TypeError(msg)


def _wire(obj: Mapping[str, Any]) -> bytes:
    """The record's JSON bytes, as a producer would send them, for the contract's parser."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_json_default)
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates (bytes that were not UTF-8): escaped, the contract names them
        return json.dumps(obj, separators=(",", ":"), default=_json_default).encode()
    except (TypeError, RecursionError) as exc:
        msg = f"not JSON: {exc}"
        raise _RowError(msg) from exc


def map_event(
    values: Mapping[str, Any], columns: Mapping[str, str], ts_unit: str = "ms", type_constant: str | None = None
) -> dict[str, Any]:
    """A row as an ``events`` record (not yet validated): ``columns`` maps our fields to the row's columns."""
    obj: dict[str, Any] = {
        "user_id": _id(values.get(columns["user_id"])),
        "item_id": _id(values.get(columns["item_id"])),
        "type": type_constant if type_constant is not None else values.get(columns["type"]),
        "ts": epoch_ms(values.get(columns["ts"]), ts_unit),
    }
    if "value" in columns and _present(value := values.get(columns["value"])):
        number = _number(value.strip()) if isinstance(value, str) else None
        # Not a (finite) number: the string stays, and the contract says why it is no value.
        obj["value"] = value if number is None or not math.isfinite(number) else number
    if "scenario" in columns and _present(scenario := values.get(columns["scenario"])):
        obj["scenario"] = scenario
    if "event_id" in columns and _present(event_id := values.get(columns["event_id"])):
        obj["event_id"] = _id(event_id)
    if "context" in columns and _present(context := values.get(columns["context"])):
        obj["context"] = _json_object(context)
    return obj


def _json_object(value: Any) -> Any:
    """A CSV cell holding a JSON object, decoded; anything else as it is, for the contract to judge."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def map_item(
    values: Mapping[str, Any], columns: Mapping[str, str], categories_sep: str = "|", ts_unit: str = "ms"
) -> dict[str, Any]:
    """A row as an ``items`` record (not yet validated); the columns not mapped go into ``attributes``.

    An ``attributes`` column holding a JSON object (our own items format) is merged into them.
    """
    obj: dict[str, Any] = {"item_id": _id(values.get(columns["item_id"])), "title": values.get(columns["title"])}
    if "ts" in columns and (ts := epoch_ms(values.get(columns["ts"]), ts_unit)) is not None:
        obj["ts"] = ts
    if "text" in columns and _present(text := values.get(columns["text"])):
        obj["text"] = text
    if "categories" in columns:
        cats = values.get(columns["categories"])
        if isinstance(cats, str):
            cats = [c.strip() for c in cats.split(categories_sep) if c.strip()]
        obj["categories"] = cats if _present(cats) else []
    used = set(columns.values())
    given = values.get("attributes")
    merge = "attributes" not in used and isinstance(given, dict)
    attributes = dict(given) if merge and isinstance(given, dict) else {}
    attributes |= {
        k: v for k, v in values.items() if k not in used and _present(v) and not (merge and k == "attributes")
    }
    if attributes:
        obj["attributes"] = attributes
    return obj


def check_event(obj: Mapping[str, Any]) -> Event:
    """The contract's verdict on a mapped event, through the stream's own parser (size, JSON, schema).

    Raises:
        InvalidRecordError: the reason the stream would dead-letter it, or that it is a ``forget`` or an
            ``impression`` record (control records, not actions: they have their own senders).
    """
    ev = parse_event(_wire(obj))
    if ev.type == FORGET:
        msg = f"type {FORGET!r} is not imported: `streamrec users forget USER_ID` sends it"
        raise InvalidRecordError(msg)
    if ev.type == IMPRESSION:
        msg = f"type {IMPRESSION!r} is not imported: the SDK's send_impression or POST /v1/impressions sends it"
        raise InvalidRecordError(msg)
    return ev


# ---- the import ----


def import_files(
    options: ImportOptions, sink: Sink | None, on_reject: Callable[[Rejection], None], progress: bool = False
) -> list[FileReport]:
    """Validate every row of the items file (if any), then of the events file, and send the good ones to ``sink``.

    Both files' columns are checked before anything is sent. ``sink`` None is a dry run: nothing is sent.

    Returns:
        One report per file, items first.

    Raises:
        ImportInputError: a file, format or column that cannot be used; or a line that cannot be read (the
            rows before it were sent).
        kafka.errors.KafkaError: from the sink.
    """
    items = Table(options.items, options.fmt, options.batch_rows) if options.items is not None else None
    events = Table(options.events, options.fmt, options.batch_rows)
    item_cols = resolve_columns(items, ITEM_FIELDS, options.item_columns) if items is not None else {}
    skip = ("type",) if options.type_constant is not None else ()
    event_cols = resolve_columns(events, EVENT_FIELDS, options.event_columns, skip)
    reports = []
    if items is not None:

        def item(values: Mapping[str, Any]) -> Any:
            record = map_item(values, item_cols, options.categories_sep, options.ts_unit)
            return parse_item(_wire(record)).to_dict()

        reports.append(_send_rows("items", items, None, item, sink, on_reject, options.batch_rows, progress))

    def event(values: Mapping[str, Any]) -> Any:
        return check_event(map_event(values, event_cols, options.ts_unit, options.type_constant))

    wanted = event_cols.values()
    reports.append(_send_rows("events", events, wanted, event, sink, on_reject, options.batch_rows, progress))
    return reports


def _send_rows(
    kind: str,
    table: Table,
    wanted: Iterable[str] | None,
    record: Callable[[Mapping[str, Any]], Any],
    sink: Sink | None,
    on_reject: Callable[[Rejection], None],
    batch_rows: int,
    progress: bool,
) -> FileReport:
    from tqdm import tqdm

    report = FileReport(kind, table.path)
    send = None if sink is None else (sink.send_item if kind == "items" else sink.send)
    rows = table.rows(wanted)
    with tqdm(unit="rows", desc=f"import {kind}", disable=not progress, file=sys.stderr) as bar:
        while batch := list(islice(rows, batch_rows)):
            good = []
            for row in batch:
                report.read += 1
                try:
                    if row.values is None:
                        raise _RowError(row.problem or "not a row")
                    good.append(record(row.values))
                except (InvalidRecordError, _RowError) as exc:
                    report.reject(exc.reason)
                    on_reject(Rejection(kind, table.path, row.line, exc.reason, row.raw))
            report.valid += len(good)
            if send is not None and sink is not None:
                for rec in good:
                    send(rec)
                sink.flush()
                report.sent += len(good)
            bar.update(len(batch))
    return report


# ---- the command ----


def add_import_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``streamrec import``."""
    parser.add_argument(
        "--events", required=True, type=Path, metavar="FILE", help="the events: CSV, TSV, Parquet or JSON lines"
    )
    parser.add_argument("--items", type=Path, metavar="FILE", help="the catalog, sent before the events")
    parser.add_argument("--format", choices=FORMATS, help="the format of both files (default: from the extension)")
    cols = parser.add_argument_group("event columns (default: the field's own name)")
    cols.add_argument("--user-col", metavar="COLUMN", help="user_id")
    cols.add_argument("--item-col", metavar="COLUMN", help="item_id")
    cols.add_argument("--ts-col", metavar="COLUMN", help="ts: epoch --ts-unit, or ISO-8601 (UTC without offset)")
    cols.add_argument("--ts-unit", choices=("ms", "s"), default="ms", help="of numeric times (default ms)")
    kind = cols.add_mutually_exclusive_group()
    kind.add_argument("--type-col", metavar="COLUMN", help="type")
    kind.add_argument("--type", choices=sorted(EVENT_TYPES), help="the type of every event, instead of a column")
    cols.add_argument("--value-col", metavar="COLUMN", help="value (optional)")
    cols.add_argument("--scenario-col", metavar="COLUMN", help="scenario (optional)")
    cols.add_argument(
        "--event-id-col", metavar="COLUMN", help="event_id (optional): the job applies an id once per user (24 h)"
    )
    cols.add_argument("--context-col", metavar="COLUMN", help="context (optional): a JSON object")
    item = parser.add_argument_group("item columns (default: the field's own name; the others: attributes)")
    item.add_argument("--item-id-col", metavar="COLUMN", help="item_id")
    item.add_argument("--title-col", metavar="COLUMN", help="title")
    item.add_argument("--text-col", metavar="COLUMN", help="text (optional)")
    item.add_argument("--categories-col", metavar="COLUMN", help="categories (optional): a list, or one string")
    item.add_argument("--categories-sep", default="|", metavar="SEP", help="between categories in a string (default |)")
    item.add_argument("--item-ts-col", metavar="COLUMN", help="ts (optional; --ts-unit): the newest upsert wins")
    parser.add_argument("--rejects", type=Path, metavar="FILE", help="also write the rejected rows here (JSON lines)")
    parser.add_argument("--dry-run", action="store_true", help="validate only; send nothing")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def options_of(args: argparse.Namespace) -> ImportOptions:
    """:class:`ImportOptions` from the parsed options of :func:`add_import_options`."""

    def named(flags: Mapping[str, str]) -> dict[str, str]:
        return {name: getattr(args, attr) for name, attr in flags.items() if getattr(args, attr)}

    event_flags = {"user_id": "user_col", "item_id": "item_col", "ts": "ts_col", "type": "type_col",
                   "value": "value_col", "scenario": "scenario_col", "event_id": "event_id_col",
                   "context": "context_col"}
    item_flags = {"item_id": "item_id_col", "title": "title_col", "text": "text_col", "categories": "categories_col",
                  "ts": "item_ts_col"}
    return ImportOptions(
        events=args.events, items=args.items, fmt=args.format, event_columns=named(event_flags),
        item_columns=named(item_flags), ts_unit=args.ts_unit, type_constant=args.type,
        categories_sep=args.categories_sep,
    )


def run_import(settings: Settings, args: argparse.Namespace, producer: Callable[[Settings], Any]) -> int:
    """``streamrec import``: prints each rejected row to stderr and the summary to stdout; returns the exit status.

    ``producer(settings)`` makes the producer (the CLI's, from the config's ``kafka`` section).
    """
    from kafka.errors import KafkaError

    k = settings.kafka
    topics = {"items": k.items_topic, "events": k.events_topic}
    try:
        rejects = args.rejects.open("w", encoding="utf-8") if args.rejects else None
    except OSError as exc:
        print(f"error: cannot write --rejects {args.rejects}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNUSABLE

    def reject(r: Rejection) -> None:
        print(f"{r.path}:{r.line}: rejected: {r.reason}", file=sys.stderr)
        if rejects is not None:
            rejects.write(json.dumps(r.to_dict(), default=str) + "\n")

    try:
        options = options_of(args)
        progress = sys.stderr.isatty()
        if args.dry_run:
            reports = import_files(options, None, reject, progress)
        else:
            with producer(settings) as sink:
                reports = import_files(options, sink, reject, progress)
    except ImportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KafkaError as exc:
        print(f"error: Kafka at {k.bootstrap}: {exc}", file=sys.stderr)
        return 1
    finally:
        if rejects is not None:
            rejects.close()
    by_kind = {r.kind: r.to_dict() | {"topic": topics[r.kind]} for r in reports}
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "items": by_kind.get("items"), "events": by_kind["events"]},
                         indent=2))
    else:
        for r in reports:
            done = f"{r.valid} valid (dry run: nothing sent)" if args.dry_run else f"{r.sent} sent to {topics[r.kind]}"
            print(f"{r.path}: {r.read} rows read, {done}, {r.rejected} rejected")
    return EXIT_REJECTED if any(r.rejected for r in reports) else 0
