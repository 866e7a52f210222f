"""``--import FILE --device-id ID``: measured site data (CSV or Parquet) into the cloud store
through the sync's validation and upsert path.

The file has a timestamp column and any of the contract's fields, under their own names or
renamed with a column map (``pv_w=solar_generation_kw,load=home_load_total_load_kw``).
Power columns (``*_kw``) may be in W or kW; timestamps without an offset are read in the
given time zone. Any regular interval is kept as is (no resampling). Fields the file lacks
stay empty: nothing is derived or invented.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from cloud.store.base import CloudStore
from cloud.sync.job import DEFAULT_BATCH_SIZE, SyncResult
from cloud.sync.retry import RetryPolicy
from cloud.sync.validation import validate
from der_core import der_data as dd
from der_core.errors import UsageError

log = logging.getLogger(__name__)

JOB = "cloud_import"
TIMESTAMP_CANDIDATES = (dd.TS, dd.TIMESTAMP, "time", "datetime", "date_time", "date")
_POWER_COLUMNS = tuple(c for c in dd.NUMERIC_COLUMNS if c.endswith("_kw"))


@dataclass(frozen=True)
class ImportOptions:
    device_id: str
    column_map: dict[str, str] = field(default_factory=dict)
    units: str = "kW"
    timezone: str = "UTC"
    timestamp_column: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        problem = dd.device_id_problem(self.device_id)
        if problem is not None:
            raise UsageError(f"--device-id: {problem}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ImportOptions:
        if not args.device_id:
            raise UsageError("--import needs --device-id ID: the device the file's readings belong to")
        try:
            ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(f"--timezone {args.timezone!r}: expected an IANA name such as 'Europe/Berlin'") from None
        return cls(args.device_id, parse_column_map(args.column_map), args.units, args.timezone,
                   args.timestamp_column)


def parse_column_map(text: str | None) -> dict[str, str]:
    """``"a=solar_generation_kw,b=home_load_total_load_kw"`` -> ``{"a": ..., "b": ...}``."""
    mapping: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(","))):
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise UsageError(f"--column-map {pair!r}: expected FILE_COLUMN=field pairs separated by commas")
        if target.strip() not in dd.FIELD_TYPES:
            raise UsageError(f"--column-map {pair!r}: {target.strip()!r} is not a reading field; "
                             f"expected one of {', '.join(dd.FIELD_TYPES)}")
        mapping[source.strip()] = target.strip()
    return mapping


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UsageError(f"--import {path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            return pd.read_csv(path)
    except (ValueError, OSError) as error:
        raise UsageError(f"--import {path}: cannot read ({error})") from None
    raise UsageError(f"--import {path}: expected a .csv or .parquet file")


def to_readings(raw: pd.DataFrame, options: ImportOptions, source: str = "file") -> tuple[pd.DataFrame, list[str]]:
    """The file's rows as a flat reading frame (columns it lacks stay empty) and the fields
    it does have."""
    frame = raw.rename(columns=options.column_map)
    ts_column = options.timestamp_column or next((c for c in TIMESTAMP_CANDIDATES if c in frame.columns), None)
    if ts_column is None or ts_column not in frame.columns:
        raise UsageError(f"{source}: no timestamp column; expected one of {list(TIMESTAMP_CANDIDATES)} "
                         f"or --timestamp-column NAME (columns: {list(raw.columns)})")
    fields = [c for c in dd.FIELD_TYPES if c in frame.columns]
    if not fields:
        raise UsageError(f"{source}: no reading fields found; map the file's columns with --column-map "
                         f"FILE_COLUMN=field (columns: {list(raw.columns)})")
    out = pd.DataFrame({dd.DEVICE_ID: options.device_id, dd.TS: _timestamps(frame[ts_column], options.timezone, source)})
    ignored = sorted(set(frame.columns) - set(fields) - {ts_column})
    if ignored:  # said once the file is accepted, so a refused file gets its one error line only
        log.info("%s: columns not imported: %s", source, ", ".join(map(str, ignored)))
    for column in dd.FIELD_TYPES:
        out[column] = frame[column].to_numpy() if column in fields else None
    if options.units == "W":
        for column in _POWER_COLUMNS:
            if column in fields:
                out[column] = pd.to_numeric(out[column], errors="coerce") / 1000.0
    return dd.coerce_frame(out), fields


def _timestamps(values: pd.Series, zone: str, source: str) -> pd.Series:
    """UTC instants. Local times without an offset follow the zone's DST rules; the repeated
    autumn hour is resolved from the order of the rows (a regular series), and a time no
    row may carry is refused rather than guessed, because the quarantine keys rows by time."""
    if isinstance(values, pd.DataFrame):  # two columns of the same name
        raise UsageError(f"{source}: more than one timestamp column {values.columns[0]!r}; expected one")
    is_time = pd.api.types.is_datetime64_any_dtype(values)
    texts = values if is_time else values.astype(str).where(values.notna())
    try:
        parsed = values if is_time else pd.to_datetime(texts, format="ISO8601", utc=False)
    except (ValueError, TypeError, OverflowError):
        problem = _unreadable(texts)
        if problem is not None:
            raise UsageError(f"{source}: {problem}") from None
        parsed = pd.to_datetime(texts, format="ISO8601", utc=True)  # offsets that differ (summer/winter) are fine
    try:
        if parsed.dt.tz is None:
            parsed = parsed.dt.tz_localize(zone, ambiguous="infer", nonexistent="raise")
    except (ValueError, TypeError, AttributeError) as error:
        first_sentence = " ".join(str(error).split(". ")[0].split())
        raise UsageError(f"{source}: timestamp column: {first_sentence}; expected ISO 8601 times in a regular series") from None
    if parsed.isna().any():
        line = int(parsed.isna().to_numpy().argmax()) + 2  # +1 for the header, +1 for 1-based lines
        raise UsageError(f"{source}: line {line}: empty timestamp; expected a time on every row")
    return parsed.dt.tz_convert("UTC")


def _unreadable(texts: pd.Series) -> str | None:
    """Why a timestamp column cannot be read, naming the first line at fault; None when every
    time reads and each carries an offset (they differ, as across a DST change)."""
    offsets = set()
    for row, text in enumerate(texts):
        if pd.isna(text):
            continue
        try:
            offsets.add(pd.to_datetime(text, format="ISO8601").tzinfo is not None)
        except (ValueError, TypeError, OverflowError):
            return f"line {row + 2}: timestamp {dd.shown(text)} is not an ISO 8601 time; expected ISO 8601 times"
    if offsets == {True}:
        return None
    return "timestamp column mixes times with and without an offset; expected one or the other throughout"


def import_file(path: str | Path, cloud: CloudStore, options: ImportOptions,
                retry: RetryPolicy | None = None) -> SyncResult:
    """Validate and upsert a meter file, recorded in ``pipeline_runs`` as ``cloud_import``."""
    path, retry = Path(path), retry or RetryPolicy()
    frame, fields = to_readings(read_table(path), options, source=str(path))
    source = f"import:{path.name}"
    run_id = retry.call("start run", lambda: cloud.start_run(JOB, {"file": path.name, "device_id": options.device_id}))
    result = SyncResult(run_id, devices=1)
    for start in range(0, len(frame), options.batch_size):
        batch = frame.iloc[start:start + options.batch_size]
        good, bad, reasons = validate(batch, required=fields)
        if len(bad):
            retry.call("quarantine", lambda: cloud.quarantine(bad, reasons, source))
        if len(good):
            retry.call("upsert readings", lambda: cloud.upsert_readings(good))
        result.rows_synced += len(good)
        result.rows_quarantined += len(bad)
    retry.call("finish run", lambda: cloud.finish_run(run_id, "ok", result.rows_synced))
    return result
