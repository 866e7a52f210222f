"""The cloud tables, defined once: names, column kinds, primary keys, indexes.

Every adapter derives its column lists, type conversions and (for SQLite) its DDL from
:data:`TABLES`; ``supabase/migrations/*.sql`` spells the same tables for Postgres and the
Supabase CLI, and ``tests/test_cloud_store_postgres.py`` checks the two agree.

``der_features`` is a *wide* table with one JSON ``features`` object per
``(device_id, ts, version)``: feature sets change with versions and a JSON column absorbs
that without migrations, while one row per instant (rather than one per feature, as a long
table would need) keeps a million-row write a million rows. Use :func:`pack_features` and
:func:`unpack_features` to move between a wide feature frame and that shape.

Writers may also hand ``upsert_frame`` the wide frame itself (``device_id``, ``ts``,
``version`` and one column per feature, see :func:`is_packed_features`): an adapter with a
cheaper encoding than JSON text uses it (the SQLite store keeps float vectors) and
every other adapter packs it first. Reads always return the JSON-object shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.errors import StoreError

# Column kinds, mapped to each backend's types by the adapters.
TEXT, FLOAT, INT, BOOL, TS, JSON = "text", "float", "int", "bool", "ts", "json"
_KIND_OF_TYPE = {str: TEXT, float: FLOAT, int: INT, bool: BOOL}


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, str]
    keys: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    serial: str | None = None  # an identity column the database assigns (pipeline_runs.id)
    defaults_now: tuple[str, ...] = field(default=())  # timestamp columns defaulting to now()

    @property
    def writable(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c != self.serial)


READINGS = "der_readings"
SITES = "sites"
WATERMARKS = "sync_watermarks"
QUARANTINE = "quarantine"
RUNS = "pipeline_runs"
FEATURES = "der_features"
FORECASTS = "forecasts"
PLANS = "dispatch_plans"
#: One row per stored plan: what its owner is shown (cloud.optimization.summary), as JSON.
PLAN_SUMMARIES = "plan_summaries"
#: Weather forecasts for a site's coordinates, one row per (source, issue, target instant):
#: a forecast made at ``t`` reads only rows issued before ``t``.
WEATHER_FORECASTS = "weather_forecasts"
#: Published prices of a market area or region, one row per (source, area, interval start,
#: publication): a plan made at ``t`` reads only prices published before ``t``.
PRICES = "prices"
#: Demand-response events as received and decided (cloud.dr): one row per (source, event id);
#: ``start_ts``/``end_ts`` bound the window ("end" is reserved in SQL).
DR_EVENTS = "dr_events"
#: What each event planned and delivered, per site and for the fleet (``device_id`` "fleet"),
#: per baseline kind; the forecast baseline is written at decision time and never recomputed.
DR_RESULTS = "dr_results"
#: The setpoint window each opted-in event puts on each of its sites (``schedule``: the
#: schedule JSON the gateway is sent, ``cloud.dr.plan.schedules``), null once the event's
#: modification no longer plans the site. A site is sent the windows of its standing events
#: read from here, so every decider on the store sends the same union.
DR_WINDOWS = "dr_windows"
#: A view over ``der_readings``: per device, first and last ``ts`` and the row count.
READING_STATS = "der_reading_stats"

SOURCE = "source"
REASON = "reason"
PAYLOAD = "payload"
WATERMARK_TS = "watermark_ts"
ROWS_SYNCED = "rows_synced"
UPDATED_AT = "updated_at"
QUARANTINED_AT = "quarantined_at"
RUN_ID, JOB, STARTED_AT, FINISHED_AT, STATUS, ROWS, ERROR, DETAILS = (
    "id", "job", "started_at", "finished_at", "status", "rows", "error", "details",
)
VERSION, FEATURES_COLUMN, CREATED_AT = "version", "features", "created_at"
ISSUED_AT, TARGET, MODEL, VALUE, LOWER, UPPER = "issued_at", "target", "model", "value", "lower", "upper"
PLAN_PRICE, EXPECTED_COST, OBJECTIVE = "price_per_kwh", "expected_cost", "objective"
SUMMARY = "summary"
#: weather_forecasts: ``ts`` is the instant the values describe (the interval ending there).
GHI, DNI, DHI, TEMP_AIR, CLOUD_COVER, WIND_SPEED, PV_POWER = (
    "ghi_w_m2", "dni_w_m2", "dhi_w_m2", "temp_air_c", "cloud_cover_percent", "wind_speed_m_s", "pv_kw",
)
WEATHER_FIELDS: tuple[str, ...] = (GHI, DNI, DHI, TEMP_AIR, CLOUD_COVER, WIND_SPEED, PV_POWER)
#: prices: ``ts`` is the start of the interval the price holds for, ``end_ts`` its end.
AREA, END_TS, PRICE_PER_KWH, CURRENCY, PUBLISHED_AT, KIND = (
    "area", "end_ts", "price_per_kwh", "currency", "published_at", "kind",
)
FETCHED_AT = "fetched_at"
FIRST_TS, LAST_TS, ROW_COUNT = "first_ts", "last_ts", "row_count"
EVENT_ID, MODIFICATION, RECEIVED_AT, START_TS, SIGNAL, SITES_COLUMN, PLANNED_KW = (
    "event_id", "modification", "received_at", "start_ts", "signal", "sites", "planned_kw",
)
BASELINE, BASELINE_KW, MEASURED_KW, DELIVERED_KW, COMPUTED_AT = (
    "baseline", "baseline_kw", "measured_kw", "delivered_kw", "computed_at",
)
SCHEDULE = "schedule"

_DEVICE_TS = (dd.DEVICE_ID, dd.TS)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            READINGS,
            {dd.DEVICE_ID: TEXT, dd.TS: TS, **{c: _KIND_OF_TYPE[typ] for c, typ in dd.FIELD_TYPES.items()}},
            dd.KEY_COLUMNS,
        ),
        Table(SITES, {**{c: _KIND_OF_TYPE[typ] for c, typ in dd.SITE_FIELDS.items()}, UPDATED_AT: TS},
              (dd.DEVICE_ID,), defaults_now=(UPDATED_AT,)),
        Table(WATERMARKS, {SOURCE: TEXT, dd.DEVICE_ID: TEXT, WATERMARK_TS: TS, ROWS_SYNCED: INT, UPDATED_AT: TS},
              (SOURCE, dd.DEVICE_ID), defaults_now=(UPDATED_AT,)),
        Table(QUARANTINE, {SOURCE: TEXT, dd.DEVICE_ID: TEXT, dd.TS: TS, REASON: TEXT, PAYLOAD: JSON, QUARANTINED_AT: TS},
              (SOURCE, dd.DEVICE_ID, dd.TS), (_DEVICE_TS,), defaults_now=(QUARANTINED_AT,)),
        Table(RUNS, {RUN_ID: INT, JOB: TEXT, STARTED_AT: TS, FINISHED_AT: TS, STATUS: TEXT, ROWS: INT, ERROR: TEXT,
                     DETAILS: JSON}, (RUN_ID,), ((JOB, STARTED_AT),), serial=RUN_ID),
        Table(FEATURES, {dd.DEVICE_ID: TEXT, dd.TS: TS, VERSION: TEXT, FEATURES_COLUMN: JSON, CREATED_AT: TS},
              (dd.DEVICE_ID, dd.TS, VERSION), (_DEVICE_TS,), defaults_now=(CREATED_AT,)),
        Table(FORECASTS, {dd.DEVICE_ID: TEXT, dd.TS: TS, TARGET: TEXT, MODEL: TEXT, ISSUED_AT: TS, VALUE: FLOAT,
                          LOWER: FLOAT, UPPER: FLOAT},
              (dd.DEVICE_ID, dd.TS, TARGET, MODEL, ISSUED_AT), (_DEVICE_TS,)),
        Table(PLANS, {dd.DEVICE_ID: TEXT, dd.TS: TS, ISSUED_AT: TS, dd.BATTERY_POWER: FLOAT, dd.BATTERY_SOC: FLOAT,
                      dd.NET_GRID_FLOW: FLOAT, PLAN_PRICE: FLOAT, EXPECTED_COST: FLOAT, OBJECTIVE: TEXT},
              (dd.DEVICE_ID, dd.TS, ISSUED_AT), (_DEVICE_TS,)),
        Table(PLAN_SUMMARIES, {dd.DEVICE_ID: TEXT, dd.TS: TS, ISSUED_AT: TS, SUMMARY: JSON},
              (dd.DEVICE_ID, dd.TS, ISSUED_AT)),
        Table(WEATHER_FORECASTS, {dd.DEVICE_ID: TEXT, SOURCE: TEXT, ISSUED_AT: TS, dd.TS: TS,
                                  **{name: FLOAT for name in WEATHER_FIELDS}, FETCHED_AT: TS},
              (dd.DEVICE_ID, SOURCE, ISSUED_AT, dd.TS), (_DEVICE_TS,), defaults_now=(FETCHED_AT,)),
        Table(PRICES, {SOURCE: TEXT, AREA: TEXT, dd.TS: TS, END_TS: TS, PUBLISHED_AT: TS, KIND: TEXT,
                       PRICE_PER_KWH: FLOAT, CURRENCY: TEXT, FETCHED_AT: TS},
              (SOURCE, AREA, dd.TS, PUBLISHED_AT), defaults_now=(FETCHED_AT,)),
        Table(DR_EVENTS, {SOURCE: TEXT, EVENT_ID: TEXT, MODIFICATION: INT, RECEIVED_AT: TS, START_TS: TS, END_TS: TS,
                          SIGNAL: TEXT, VALUE: FLOAT, SITES_COLUMN: JSON, STATUS: TEXT, REASON: TEXT, PLANNED_KW: FLOAT},
              (SOURCE, EVENT_ID)),
        Table(DR_RESULTS, {SOURCE: TEXT, EVENT_ID: TEXT, dd.DEVICE_ID: TEXT, BASELINE: TEXT, BASELINE_KW: FLOAT,
                           PLANNED_KW: FLOAT, MEASURED_KW: FLOAT, DELIVERED_KW: FLOAT, COMPUTED_AT: TS},
              (SOURCE, EVENT_ID, dd.DEVICE_ID, BASELINE)),
        Table(DR_WINDOWS, {SOURCE: TEXT, EVENT_ID: TEXT, dd.DEVICE_ID: TEXT, SCHEDULE: JSON, COMPUTED_AT: TS},
              (SOURCE, EVENT_ID, dd.DEVICE_ID)),
    )
}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown cloud table {name!r}; expected one of {sorted(TABLES)}") from None


def updated_columns(name: str, names: Sequence[str], update: Sequence[str] | None) -> list[str]:
    """The columns of ``names`` an upsert replaces on a key already stored: every non-key
    one, or only those of ``update``."""
    keys = table(name).keys
    return [c for c in names if c not in keys and (update is None or c in update)]


def to_write(name: str, frame: pd.DataFrame, update: Sequence[str] | None) -> tuple[pd.DataFrame, Sequence[str] | None]:
    """What every adapter's upsert starts from: the rows as :func:`coerce` types them, the
    last of each key kept (a batch's later row wins, as it would one statement later), their
    texts checked (:func:`_no_nul`), and the columns a stored row has replaced (:func:`replaced`)."""
    data = coerce(name, frame)
    if name != READINGS:  # readings are validated before they come (cloud.sync.validation)
        _no_nul(name, data)
    return data.drop_duplicates(list(table(name).keys), keep="last"), replaced(name, frame, update)


def replaced(name: str, frame: pd.DataFrame, update: Sequence[str] | None) -> Sequence[str] | None:
    """The ``update`` an upsert of ``frame`` into ``name`` means: of ``update`` (``None``:
    every column), only those the frame carries. :func:`coerce` gives an absent column NULL
    for a new row's sake, and a stored row replaced with that lost what it held: a forecast
    re-sent without its interval erased the interval. A ``defaults_now`` column is the
    write's own time, so it counts as carried; readings are refused without every column,
    and a wide feature frame carries the one ``features`` object."""
    if name == READINGS or (name == FEATURES and not is_packed_features(frame)):
        return update
    spec = table(name)
    carried = [c for c in spec.writable if c in frame.columns or c in spec.defaults_now]
    return carried if update is None else [c for c in carried if c in update]


def coerce(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A frame with exactly the table's writable columns and their dtypes (a column the
    table lacks is refused); a missing column is empty, or now for one the database would
    default to now (``Table.defaults_now``), since a bulk upsert sends every column and so
    never lets the default apply."""
    if name == READINGS:
        if not is_contract_frame(frame):
            return dd.coerce_frame(frame)
        # In microseconds, as stored: two instants within one are one key before the batch's
        # duplicates go, or Postgres refused the batch (a row updated twice by one statement).
        return frame.assign(**{dd.TS: frame[dd.TS].dt.as_unit("us")}) if frame[dd.TS].dt.unit != "us" else frame
    if name == FEATURES and not is_packed_features(frame):
        frame = pack_features(frame)
    spec = table(name)
    unknown = [c for c in frame.columns if c not in spec.columns]
    if unknown:  # a misspelt column would be dropped, its values lost without a word
        raise StoreError(f"{name} has no column {', '.join(map(repr, unknown))}; expected columns of {list(spec.columns)}")
    out: dict[str, Any] = {}
    for column in spec.writable:
        kind = spec.columns[column]
        if column in frame.columns:
            values = frame[column]
        elif column in spec.defaults_now:
            values = pd.Series([dd.utc_now()] * len(frame), dtype=object)
        else:
            values = pd.Series([None] * len(frame), dtype=object)
        values = values.reset_index(drop=True)
        if kind in (TS, FLOAT, INT, BOOL):
            out[column] = _of_kind(name, column, kind, values)
        elif kind == JSON and pd.api.types.infer_dtype(values, skipna=False) == "string":
            out[column] = values.to_numpy(dtype=object)  # all JSON text already (pack_features)
        elif kind == JSON:
            out[column] = _cells([_json_value(v) for v in values])  # map() would infer [3, None] as floats
        else:
            out[column] = values.astype("str")
    # One constructor call: assigning column by column costs more than the conversions.
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _of_kind(name: str, column: str, kind: str, values: pd.Series) -> Any:
    """``values`` as the column's kind. A value that is not one (a latitude of "north", a
    flag of "no", a modification of 1.5) is refused in one line naming it: coercing made it
    missing, which stored a site without its latitude as if none had been given."""
    try:
        return _converted(kind, values)
    except (TypeError, ValueError, OverflowError):
        bad = next((v for v in values.dropna() if not _converts(kind, v)), None)
        shown = repr(bad.item() if isinstance(bad, np.generic) else bad) if bad is not None else "a value"
        raise StoreError(f"{name}.{column}: {shown} cannot be stored; expected {kind} values") from None


def _no_nul(name: str, data: pd.DataFrame) -> None:
    """Refuse a text holding U+0000, in one line. PostgreSQL's text cannot hold it and
    SQLite's can: a store that kept it could never move to a server. Checked on writes only,
    so a store that kept one before still reads."""
    for column, kind in table(name).columns.items():
        if kind != TEXT or column not in data.columns:
            continue
        nul = data[column].str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
        if nul.any():
            raise StoreError(f"{name}.{column}: {data[column][nul].iloc[0]!r} holds a NUL character, which "
                             "PostgreSQL's text cannot store; expected text without one")


def _converted(kind: str, values: pd.Series) -> Any:
    if kind == TS:
        return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
    if kind == BOOL:
        return pd.array(values, dtype="boolean")
    numbers = pd.to_numeric(values, errors="coerce")
    if (numbers.isna() & values.notna()).any():
        raise ValueError("not a number")
    return numbers.astype("float64") if kind == FLOAT else pd.array(numbers, dtype="Int64")


def _converts(kind: str, value: Any) -> bool:
    try:
        _converted(kind, pd.Series([value], dtype=object))
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def is_contract_frame(frame: pd.DataFrame) -> bool:
    """True for a frame already in ``der_data.coerce_frame``'s shape (what every edge store
    returns), so bulk paths need not convert half a million rows a second time."""
    # Any column order: coerce_frame itself puts the text columns last.
    if len(frame.columns) != len(dd.COLUMNS) or set(frame.columns) != set(dd.COLUMNS) \
            or str(frame[dd.TS].dtype) not in ("datetime64[us, UTC]", "datetime64[ns, UTC]"):
        return False
    expected = {float: "float64", int: "Int64", str: "str"}
    return all(str(frame[c].dtype) == expected[t] for c, t in dd.FIELD_TYPES.items()) and \
        str(frame[dd.DEVICE_ID].dtype) == "str"


def reading_columns(columns: Sequence[str] | None) -> tuple[str, ...]:
    """The columns a column-limited reading read returns: the keys and ``columns``, in
    ``der_data.coerce_frame``'s order; ``None`` means every column."""
    if columns is None:
        return dd.COLUMNS
    unknown = sorted(set(columns) - set(dd.COLUMNS))
    if unknown:
        raise KeyError(f"unknown reading columns {unknown}; expected names from der_data.COLUMNS")
    wanted = set(columns) | set(dd.KEY_COLUMNS)
    return tuple(c for c in (*dd.KEY_COLUMNS, *dd.NUMERIC_COLUMNS, *dd.TEXT_COLUMNS) if c in wanted)


def coerce_readings(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Rows of some reading columns -> those columns with the contract's dtypes."""
    return dd.coerce_frame(frame, reading_columns(names))


_EMPTY: dict[tuple[str, tuple[str, ...]], pd.DataFrame] = {}


def frame_from_records(name: str, rows: Sequence[Sequence[Any]], names: Sequence[str], *,
                       ts_micros: bool = False) -> pd.DataFrame:
    """Rows a server returned for columns ``names`` of table ``name`` -> a frame with the
    contract's dtypes (the serial id, where the table has one, first and nullable).
    ``ts_micros``: its times came as integer microseconds since 1970 (None where missing);
    the columns are then built one by one, each by its kind, never inferred from objects."""
    if not rows:  # the typed empty frame, built once: an empty table's read is a route's whole work
        key = (name, tuple(names))
        if key not in _EMPTY:
            _EMPTY[key] = frame_from_records(name, [(None,) * len(names)], names, ts_micros=ts_micros).iloc[:0]
        return _EMPTY[key].copy()
    if ts_micros:
        kinds = table(name).columns
        columns = list(zip(*rows, strict=True))
        frame = pd.DataFrame({n: pd.to_datetime(pd.array(c, dtype="Int64"), unit="us", utc=True) if kinds.get(n) == TS
                              else _cells(c) for n, c in zip(names, columns, strict=True)},
                             index=pd.RangeIndex(len(rows)))
    else:
        frame = pd.DataFrame.from_records(rows, columns=list(names))
    if name == READINGS:
        return coerce_readings(frame, names)
    out = coerce(name, frame)
    serial = table(name).serial
    if serial:
        out.insert(0, serial, pd.array(frame[serial], dtype="Int64"))
    return out


def _cells(values: Sequence[Any]) -> np.ndarray:
    """One object cell per value. ``np.array`` would nest JSON arrays of equal length into a
    second dimension (every event's ``sites`` a list of two) and the frame could not be built."""
    return np.fromiter(values, dtype=object, count=len(values))


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        return value  # already JSON text (pack_features): passed through, never re-encoded
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def python_columns(name: str, frame: pd.DataFrame, *, ts_micros: bool = False) -> dict[str, list[Any]]:
    """Column lists of plain Python values (``None`` for missing; ``ts`` as aware datetimes,
    or integer microseconds since the epoch with ``ts_micros``, JSON as text) in table
    order: what database drivers and JSON encoders accept."""
    spec = table(name)
    out: dict[str, list[Any]] = {}
    for column in spec.writable:
        kind, values = spec.columns[column], frame[column]
        if kind == TS and ts_micros:
            # Straight from the int64 values: no datetime object per row on the way.
            micros = pd.DatetimeIndex(values).tz_convert("UTC").as_unit("us").asi8
            cells = micros.astype(object)
            cells[values.isna().to_numpy()] = None
            out[column] = cells.tolist()
        elif kind == TS:
            stamps = values.dt.tz_convert("UTC").dt.to_pydatetime()
            out[column] = [None if t is pd.NaT or t is None else t for t in stamps]
        elif kind == FLOAT:
            floats = values.to_numpy(dtype="float64", na_value=np.nan)
            cells = floats.astype(object)
            # NaN is missing; an infinity is a value and stays one. Vectorised: a per-value
            # test costs seconds per million.
            cells[np.isnan(floats)] = None
            out[column] = cells.tolist()
        elif kind in (INT, BOOL):
            out[column] = [None if v is pd.NA or v is None else (int(v) if kind == INT else bool(v))
                           for v in values.astype(object).tolist()]
        elif kind == JSON and name == FEATURES:  # pack_features' own JSON, a million rows at a time
            out[column] = [v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True, default=_json_default)
                           for v in values.tolist()]
        elif kind == JSON:
            out[column] = [json_text(name, column, v) for v in values.tolist()]
        else:
            out[column] = [None if v is None or v != v else str(v) for v in values.astype(object).tolist()]
    return out


def json_text(name: str, column: str, value: Any) -> str | None:
    """A JSON cell (an object, or JSON text) as the JSON text every adapter stores alike.
    JSON has no NaN, so a missing number is ``null``, as ``pack_features`` writes it; text
    that is not JSON, an infinity (which no ``null`` would stand for) or a NUL character is
    refused in one line before anything is written: PostgreSQL's jsonb refuses them, and
    SQLite kept them (text that is not JSON then failed every read of the table)."""
    if value is None:
        return None
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
        text = json.dumps(_nan_as_null(parsed), sort_keys=True, default=_json_default, allow_nan=False)
        if _holds_nul(parsed):
            raise ValueError("a NUL character, which PostgreSQL's jsonb cannot store")
        return text
    except (ValueError, TypeError) as error:
        raise StoreError(f"{name}.{column}: {str(value)[:60]!r} cannot be stored ({error}); expected JSON text "
                         "or an object of JSON values") from None


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_nul(v) for v in value)


def _nan_as_null(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_as_null(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return _nan_as_null(value.item())
    if isinstance(value, pd.Timestamp):
        return dd.format_ts(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON column")


def is_packed_features(frame: pd.DataFrame) -> bool:
    """True for ``der_features`` rows (a ``features`` column of JSON objects), False for a
    wide frame with one column per feature."""
    return FEATURES_COLUMN in frame.columns


def feature_columns(wide: pd.DataFrame) -> list[str]:
    """The feature columns of a wide frame: every column but the row's keys."""
    return [c for c in wide.columns if c not in (*_DEVICE_TS, VERSION)]


def pack_features(wide: pd.DataFrame, version: str | None = None) -> pd.DataFrame:
    """A wide feature frame (``device_id``, ``ts``, one column per feature) -> ``der_features``
    rows; NaN features become JSON ``null``. ``version`` defaults to the frame's own
    ``version`` column. Uses pandas' C JSON writer for bulk speed."""
    names = feature_columns(wide)
    return pd.DataFrame({
        dd.DEVICE_ID: wide[dd.DEVICE_ID].astype(str).to_numpy(),
        # A DatetimeIndex, not .to_numpy(): tz-aware values would become one Timestamp per row.
        dd.TS: pd.DatetimeIndex(pd.to_datetime(wide[dd.TS], utc=True)),
        VERSION: wide[VERSION].astype(str).to_numpy() if version is None else version,
        # Object dtype: a string column would copy ~1 kB per row into Arrow and back out.
        FEATURES_COLUMN: pd.Series(_json_records(wide[names]), dtype=object),
    })


def _json_records(features: pd.DataFrame) -> list[str]:
    """One JSON object text per row. pandas' ``lines=True`` splits its output in Python,
    which cost more than writing the JSON; with numbers only (no strings that could hold
    ``},{``) the records of a plain array split at C speed instead."""
    if not len(features.columns):
        return ["{}"] * len(features)
    if not all(pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t) for t in features.dtypes):
        return features.to_json(orient="records", lines=True, double_precision=15).splitlines()
    text = features.to_json(orient="records", double_precision=15)
    return text[1:-1].replace("},{", "}\n{").split("\n")


def unpack_features(frame: pd.DataFrame) -> pd.DataFrame:
    """``der_features`` rows -> a wide frame with one float column per feature name."""
    features = pd.DataFrame.from_records([f or {} for f in frame[FEATURES_COLUMN]], index=frame.index)
    return pd.concat([frame[[dd.DEVICE_ID, dd.TS, VERSION]], features.astype("float64")], axis=1)
