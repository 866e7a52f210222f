"""Every byte of InfluxDB 2.x text the edge store sends or reads: line protocol, Flux, Flux CSV.

Kept apart from the adapter so each piece can be pasted into ``influx write`` / ``influx
query`` (or the UI's script editor) against a real server and checked by hand. No I/O here.

Schema (DESIGN.md, "Data contracts"): one point per reading, measurement ``der_reading``,
tags ``device_id`` and ``grid_price_time_of_use_period``, every other flat column a field.
Integer columns are written as ``i`` integers so they come back as integers; a missing
value (NaN/None) is simply not written, which is how InfluxDB represents "no value".
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.errors import StoreError

MEASUREMENT = "der_reading"
TAGS: tuple[str, ...] = (dd.DEVICE_ID, dd.TOU_PERIOD)
FIELDS: tuple[str, ...] = tuple(c for c in dd.FIELD_TYPES if c not in TAGS)
#: Nanoseconds per unit of each write precision the v2 API accepts.
PRECISIONS: dict[str, int] = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
# Flux's range() needs both bounds; these cover every instant a reading can carry
# (pandas' nanosecond range ends in April 2262).
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
END_OF_TIME = pd.Timestamp("2262-01-01", tz="UTC")

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})


# --- line protocol ------------------------------------------------------------------------------


def _check_identifier(what: str, value: str) -> None:
    # The server's tag scanner treats "\" as an escape only before , = and space, and
    # line breaks end a line, so these could not be read back as written: refuse them.
    if not value:
        raise ValueError(f"{what} is empty; InfluxDB needs a non-empty value")
    if any(c in value for c in "\\\n\r"):
        raise ValueError(f"{what} {value!r} contains a backslash or line break; expected a plain identifier")


def escape_measurement(name: str) -> str:
    _check_identifier("measurement", name)
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(value: str, what: str = "tag") -> str:
    """Escape a tag key, tag value or field key (commas, equals signs and spaces)."""
    _check_identifier(what, value)
    return value.translate(_KEY_ESCAPES)


def escape_string_field(value: str) -> str:
    """A quoted string field value: only ``"`` and ``\\`` are escaped inside the quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_parts(frame: pd.DataFrame, column: str) -> list[str | None]:
    """``key=value`` for each row of one column, ``None`` where the value is missing."""
    key = escape_key(column, "field key")
    typ = dd.FIELD_TYPES[column]
    if typ is str:
        return [None if v is None or v is pd.NA else f"{key}={escape_string_field(str(v))}" for v in frame[column]]
    floats = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if np.isinf(floats).any():
        raise ValueError(f"column {column} holds an infinite value; InfluxDB stores finite numbers only")
    if typ is int:
        return [None if f != f else f"{key}={int(f)}i" for f in floats.tolist()]
    return [None if f != f else f"{key}={f!r}" for f in floats.tolist()]


def _timestamps(frame: pd.DataFrame, precision: str) -> list[int]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    nanos = pd.DatetimeIndex(pd.to_datetime(frame[dd.TS], utc=True)).as_unit("ns").asi8
    unit = PRECISIONS[precision]
    if (nanos % unit).any():
        raise ValueError(f"timestamps finer than precision {precision!r} would be truncated; use a finer precision")
    return (nanos // unit).tolist()


def frame_to_lines(frame: pd.DataFrame, precision: str = "ns") -> list[str]:
    """One line-protocol line per reading of a flat frame.

    Raises ``ValueError`` naming the column or value that InfluxDB could not store as given.
    """
    if frame.empty:
        return []
    stamps = _timestamps(frame, precision)
    measurement = escape_measurement(MEASUREMENT)
    tag_parts = []
    for tag in TAGS:
        key = escape_key(tag, "tag key")
        values = frame[tag].astype(object).tolist()
        # An empty tag is how InfluxDB says "no tag"; device_id is required, the period is not.
        parts = [None if v is None or v is pd.NA or v == "" else f"{key}={escape_key(str(v), tag)}" for v in values]
        if tag == dd.DEVICE_ID and None in parts:
            raise ValueError(f"{dd.DEVICE_ID} is missing on a reading; every point needs one")
        tag_parts.append(parts)
    field_parts = [_field_parts(frame, column) for column in FIELDS]
    lines = []
    for i, stamp in enumerate(stamps):
        tags = ",".join(p[i] for p in tag_parts if p[i] is not None)
        fields = ",".join(p[i] for p in field_parts if p[i] is not None)
        if not fields:
            raise ValueError(f"reading {frame[dd.DEVICE_ID].iloc[i]} at {frame[dd.TS].iloc[i]} has no values to store")
        lines.append(f"{measurement},{tags} {fields} {stamp}")
    return lines


# --- Flux -----------------------------------------------------------------------------------------


def flux_string(value: str) -> str:
    """A Flux string literal (``\\``, ``"`` and interpolation ``${`` escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def flux_time(ts: pd.Timestamp | None, default: pd.Timestamp) -> str:
    """An RFC 3339 time literal in UTC, to the nanosecond."""
    ts = default if ts is None else dd.parse_ts(ts)
    return ts.tz_convert("UTC").as_unit("ns").strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{ts.nanosecond:03d}Z"


def _source(bucket: str, device_id: str | None, start, stop=None) -> list[str]:
    lines = [
        f"from(bucket: {flux_string(bucket)})",
        f"  |> range(start: {flux_time(start, EPOCH)}, stop: {flux_time(stop, END_OF_TIME)})",
        f"  |> filter(fn: (r) => r._measurement == {flux_string(MEASUREMENT)})",
    ]
    if device_id is not None:
        lines.append(f"  |> filter(fn: (r) => r.{dd.DEVICE_ID} == {flux_string(device_id)})")
    return lines


def range_query(bucket: str, device_id: str | None, start=None, stop=None, limit: int | None = None) -> str:
    """Readings with ``start <= ts < stop``, one row per reading, ordered by (device_id, ts)."""
    lines = _source(bucket, device_id, start, stop) + [
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        # pivot leaves one table per series (device, period); one table makes sort/limit global.
        "  |> group()",
        f'  |> sort(columns: ["{dd.DEVICE_ID}", "_time"])',
    ]
    if limit is not None:
        lines.append(f"  |> limit(n: {int(limit)})")
    return "\n".join(lines) + "\n"


def count_query(bucket: str, device_id: str | None, start=None) -> str:
    """Number of readings (distinct timestamps per device), answered in the ``_time`` column."""
    # A reading may lack any one field, so count distinct times rather than one field's points;
    # _value is dropped first because float and integer fields cannot share one table.
    lines = _source(bucket, device_id, start) + [
        f'  |> keep(columns: ["{dd.DEVICE_ID}", "_time"])',
        f'  |> group(columns: ["{dd.DEVICE_ID}"])',
        '  |> unique(column: "_time")',
        '  |> count(column: "_time")',
        "  |> group()",
        '  |> sum(column: "_time")',
    ]
    return "\n".join(lines) + "\n"


def devices_query(bucket: str) -> str:
    """Every device_id with stored readings, one per row in ``_value``."""
    lines = _source(bucket, None, None) + [
        f'  |> keep(columns: ["{dd.DEVICE_ID}"])',
        "  |> group()",
        f'  |> distinct(column: "{dd.DEVICE_ID}")',
        "  |> sort()",
    ]
    return "\n".join(lines) + "\n"


def latest_time_query(bucket: str, device_id: str) -> str:
    """The newest reading time of a device in ``_time`` (``last()`` per series is pushed down)."""
    lines = _source(bucket, device_id, None) + [
        "  |> last()",
        '  |> keep(columns: ["_time"])',
        "  |> group()",
        '  |> max(column: "_time")',
    ]
    return "\n".join(lines) + "\n"


# --- annotated Flux CSV ---------------------------------------------------------------------------


def _parse_value(datatype: str, text: str) -> Any:
    if datatype == "double":
        return float(text.replace("Inf", "inf"))
    if datatype in ("long", "unsignedLong"):
        return int(text)
    if datatype == "boolean":
        return text == "true"
    if datatype.startswith("dateTime"):
        return dd.parse_ts(text)
    return text


def parse_annotated_csv(text: str) -> list[dict[str, Any]]:
    """Rows of every table of an annotated Flux CSV response, values typed by ``#datatype``.

    Empty cells take the ``#default`` annotation, else ``None``. An in-band error table
    (columns ``error``, ``reference``) raises :class:`StoreError`.
    """
    rows: list[dict[str, Any]] = []
    datatypes: list[str] = []
    defaults: list[str] = []
    header: list[str] | None = None
    for record in csv.reader(io.StringIO(text)):
        if not record or all(cell == "" for cell in record):
            header = None  # a blank line ends a block; the next one brings its own annotations
            continue
        if record[0] == "#datatype":
            datatypes, header = record, None
        elif record[0] == "#default":
            defaults = record
        elif record[0].startswith("#"):
            continue
        elif header is None:
            header = record
            if "error" in header and "reference" in header:
                header = ["error-table", *header[1:]]
        elif header[0] == "error-table":
            message = record[header.index("error")] if "error" in header else ",".join(record)
            raise StoreError(f"InfluxDB query failed: {message}")
        else:
            row = {}
            for i, name in enumerate(header):
                if i == 0 or name in ("result", "table"):
                    continue
                cell = record[i] if i < len(record) else ""
                if cell == "" and i < len(defaults):
                    cell = defaults[i]
                row[name] = None if cell == "" else _parse_value(datatypes[i] if i < len(datatypes) else "", cell)
            rows.append(row)
    return rows


def csv_to_frame(text: str) -> pd.DataFrame:
    """A pivoted range-query response as a flat reading frame (the data contract's columns)."""
    rows = parse_annotated_csv(text)
    flat = [{column: row.get("_time" if column == dd.TS else column) for column in dd.COLUMNS} for row in rows]
    return dd.rows_to_frame(flat)


def csv_values(text: str, column: str = "_value") -> list[Any]:
    """One column of every row (for count, devices and latest-time answers)."""
    return [row.get(column) for row in parse_annotated_csv(text) if row.get(column) is not None]

