"""The reading data contract: the one module that spells field and column names.

A reading exists in two shapes (DESIGN.md, "Data contracts"):

* nested, the JSON of the spec: ``{"timestamp", "device_id", "solar": {...}, ...}``;
* flat, for database rows, InfluxDB fields and feature inputs: group and field joined
  with ``_`` (``solar_generation_kw``), plus ``device_id``, ``ts`` and
  ``net_grid_flow_kw``.

:func:`flatten` and :func:`unflatten` convert one reading between the shapes; a batch of
readings travels as a flat :class:`pandas.DataFrame` (``ts`` tz-aware UTC), and
:func:`frame_to_nested` / :func:`nested_to_frame` convert batches. Nothing else in the
project writes a column name out by hand: it uses the constants below.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pandas as pd

#: The nested groups of a reading, their fields and the Python type of each field.
GROUPS: dict[str, dict[str, type]] = {
    "solar": {
        "generation_kw": float,
        "irradiance_w_m2": float,
        "panel_temp_celsius": float,
        "efficiency_percent": float,
    },
    "battery": {
        "soc_percent": float,
        "capacity_kwh": float,
        "power_kw": float,
        "voltage_v": float,
        "temperature_celsius": float,
        "cycles": int,
        "health_percent": float,
    },
    "home_load": {
        "total_load_kw": float,
        "hvac_kw": float,
        "appliances_kw": float,
        "lighting_kw": float,
        "ev_charging_kw": float,
        "other_kw": float,
    },
    "grid_price": {
        "price_per_kwh": float,
        "feed_in_tariff": float,
        "demand_charge": float,
        "time_of_use_period": str,
        "carbon_intensity_g_kwh": float,
    },
}

DEVICE_ID = "device_id"

#: A device id names MQTT topics (``der/<id>/...``), file names (``<id>.json``) and URL paths,
#: so it holds only characters that are literal in all three, starts with a letter or digit
#: (never a dot or a dash a shell or path could read otherwise) and is short enough to quote
#: whole in an error line.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DEVICE_ID_MAX_CHARS = 64
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


def some(names: list[str], at_most: int = 20) -> str:
    """Names for a line of output: the first ``at_most`` and how many more, so thousands of
    columns, entities or sites still read in one line."""
    more = len(names) - at_most
    return ", ".join(names[:at_most]) + (f" and {more:,} more" if more > 0 else "")


def shown(value: object, limit: int = 40) -> str:
    """``repr`` of a value cut to ``limit`` characters, for error lines that quote input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def device_id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a device id, or None when it can."""
    if not isinstance(value, str):
        return f"device_id must be a string, got {type(value).__name__}"
    if not _DEVICE_ID_RE.fullmatch(value):
        return (
            f"device_id {shown(value)} is not valid; expected 1 to {DEVICE_ID_MAX_CHARS} letters, digits, "
            "'_', '.', ':' or '-', starting with a letter or digit"
        )
    return None
TS = "ts"
TIMESTAMP = "timestamp"  # the nested form's name for ``ts``
NET_GRID_FLOW = "net_grid_flow_kw"


def flat_name(group: str, field: str) -> str:
    """The flat column name of ``group.field``."""
    return f"{group}_{field}"


#: Flat measurement columns in contract order, with their Python types.
FIELD_TYPES: dict[str, type] = {
    flat_name(group, field): typ for group, fields in GROUPS.items() for field, typ in fields.items()
}
FIELD_TYPES[NET_GRID_FLOW] = float

#: Every flat column, keys first.
COLUMNS: tuple[str, ...] = (DEVICE_ID, TS, *FIELD_TYPES)
KEY_COLUMNS: tuple[str, str] = (DEVICE_ID, TS)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c, t in FIELD_TYPES.items() if t in (int, float))
INT_COLUMNS: tuple[str, ...] = tuple(c for c, t in FIELD_TYPES.items() if t is int)
TEXT_COLUMNS: tuple[str, ...] = tuple(c for c, t in FIELD_TYPES.items() if t is str)
_INT_SET = frozenset(INT_COLUMNS)

# Names other modules need for physics and invariants, spelled once here.
SOLAR_KW = flat_name("solar", "generation_kw")
SOLAR_IRRADIANCE = flat_name("solar", "irradiance_w_m2")
PANEL_TEMP = flat_name("solar", "panel_temp_celsius")
BATTERY_POWER = flat_name("battery", "power_kw")
BATTERY_SOC = flat_name("battery", "soc_percent")
BATTERY_CAPACITY = flat_name("battery", "capacity_kwh")
BATTERY_CYCLES = flat_name("battery", "cycles")
BATTERY_HEALTH = flat_name("battery", "health_percent")
BATTERY_TEMP = flat_name("battery", "temperature_celsius")
BATTERY_VOLTAGE = flat_name("battery", "voltage_v")
LOAD_TOTAL = flat_name("home_load", "total_load_kw")
LOAD_COMPONENTS: tuple[str, ...] = tuple(
    flat_name("home_load", f) for f in ("hvac_kw", "appliances_kw", "lighting_kw", "ev_charging_kw", "other_kw")
)
LOAD_EV = flat_name("home_load", "ev_charging_kw")
PRICE = flat_name("grid_price", "price_per_kwh")
FEED_IN = flat_name("grid_price", "feed_in_tariff")
DEMAND_CHARGE = flat_name("grid_price", "demand_charge")
TOU_PERIOD = flat_name("grid_price", "time_of_use_period")
CARBON = flat_name("grid_price", "carbon_intensity_g_kwh")

TOU_PERIODS: tuple[str, ...] = ("off_peak", "shoulder", "peak")


_LOAD_KW = (0.0, 10_000.0)

#: Fields that cannot be below 0 whose sensors read a little below it in the dark: a PV
#: inverter draws a few watts to tens of watts at night (about a hundred for a 100 kW one),
#: which many meters report as negative generation, and a pyranometer's thermal offset reads
#: a few W/m2 below 0 (up to about 20). Down to this much below 0 a reading is that offset
#: and counts as 0; further below is a sign mixed up or a fault.
NIGHT_OFFSET: dict[str, float] = {SOLAR_KW: 0.5, SOLAR_IRRADIANCE: 20.0}

#: Physical bounds (inclusive) of each numeric field: wide enough for any real home or
#: simulated fleet, narrow enough to catch unit mix-ups (W sent as kW), a wrong scale factor
#: and sensor garbage. The cloud quarantines a reading holding a value outside them; a
#: gateway stores such a value of its device as missing.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    SOLAR_KW: (-NIGHT_OFFSET[SOLAR_KW], 10_000.0),
    SOLAR_IRRADIANCE: (-NIGHT_OFFSET[SOLAR_IRRADIANCE], 1_500.0),
    PANEL_TEMP: (-60.0, 120.0),
    flat_name("solar", "efficiency_percent"): (0.0, 100.0),
    BATTERY_SOC: (0.0, 100.0),
    BATTERY_CAPACITY: (0.0, 100_000.0),
    BATTERY_POWER: (-10_000.0, 10_000.0),
    BATTERY_VOLTAGE: (0.0, 2_000.0),
    BATTERY_TEMP: (-60.0, 100.0),
    BATTERY_CYCLES: (0.0, 1_000_000.0),
    BATTERY_HEALTH: (0.0, 100.0),
    LOAD_TOTAL: _LOAD_KW,
    **{column: _LOAD_KW for column in LOAD_COMPONENTS},
    PRICE: (-100.0, 100.0),
    FEED_IN: (-100.0, 100.0),
    DEMAND_CHARGE: (0.0, 10_000.0),
    CARBON: (0.0, 3_000.0),
    NET_GRID_FLOW: (-20_000.0, 20_000.0),
}


def plausible(name: str, value: float) -> bool:
    """Whether ``value`` lies within field ``name``'s :data:`PLAUSIBLE` bounds (NaN does not)."""
    low, high = PLAUSIBLE[name]
    return low <= value <= high


def format_ts(ts: datetime | pd.Timestamp) -> str:
    """ISO 8601 in UTC with an explicit offset (DESIGN.md: timestamps carry their zone)."""
    ts = pd.Timestamp(ts)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts} has no time zone; expected a timezone-aware instant")
    return ts.tz_convert("UTC").isoformat()


def parse_ts(value: str | datetime | pd.Timestamp) -> pd.Timestamp:
    """Parse an ISO 8601 instant; a naive one is taken as UTC."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _cast(column: str, value: Any) -> Any:
    if value is None:
        return None
    typ = FIELD_TYPES[column]
    if typ is float:
        value = float(value)
        return None if value != value else value  # NaN is "missing" in every store
    return typ(value)


def flatten(reading: Mapping[str, Any]) -> dict[str, Any]:
    """Nested reading (spec JSON) -> flat row. Unknown or missing groups raise ``KeyError``."""
    row: dict[str, Any] = {DEVICE_ID: reading[DEVICE_ID], TS: parse_ts(reading[TIMESTAMP])}
    for group, fields in GROUPS.items():
        values = reading[group]
        for field in fields:
            row[flat_name(group, field)] = _cast(flat_name(group, field), values.get(field))
    row[NET_GRID_FLOW] = _cast(NET_GRID_FLOW, reading.get(NET_GRID_FLOW))
    return row


def unflatten(row: Mapping[str, Any]) -> dict[str, Any]:
    """Flat row -> nested reading with exactly the spec's keys, in the spec's order."""
    reading: dict[str, Any] = {TIMESTAMP: format_ts(parse_ts(row[TS])), DEVICE_ID: str(row[DEVICE_ID])}
    for group, fields in GROUPS.items():
        reading[group] = {field: _cast(flat_name(group, field), row[flat_name(group, field)]) for field in fields}
    reading[NET_GRID_FLOW] = _cast(NET_GRID_FLOW, row[NET_GRID_FLOW])
    return reading


def empty_frame() -> pd.DataFrame:
    """A zero-row flat frame with the contract's dtypes."""
    return coerce_frame(pd.DataFrame({c: [] for c in COLUMNS}))


def coerce_frame(frame: pd.DataFrame, columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """Order the contract's columns and give them their dtypes (float64, int64, str, UTC ts).

    ``columns`` limits the result to those (in the same order as the full result): a reader
    that asked for a few columns converts only those, not every column of the contract."""
    wanted = set(columns)
    missing = [c for c in COLUMNS if c in wanted and c not in frame.columns]
    if missing:
        raise KeyError(f"reading frame lacks columns {missing}")
    out: dict[str, Any] = {}
    if DEVICE_ID in wanted:
        out[DEVICE_ID] = frame[DEVICE_ID].astype(str).to_numpy()
    if TS in wanted:
        # A DatetimeIndex keeps the values tz-aware and vectorised (a tz-aware .to_numpy() would
        # build one Timestamp object per row), and zero-row frames keep the dtype too.
        out[TS] = pd.DatetimeIndex(pd.to_datetime(frame[TS], utc=True)).as_unit("us")
    for column in NUMERIC_COLUMNS:
        if column in wanted:
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64")
            # Integers may be missing in imported or quarantined data, so keep the nullable kind.
            out[column] = pd.array(np.round(values), dtype="Int64") if column in _INT_SET else values
    for column in TEXT_COLUMNS:
        if column in wanted:
            out[column] = frame[column].astype("str").to_numpy()
    # One constructor call: assigning column by column costs more than the conversions.
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def frame_to_nested(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Yield spec-shaped readings from a flat frame, fast enough for a site-year of JSONL."""
    stamps = _timestamps(frame)
    devices = frame[DEVICE_ID].astype(str).tolist()
    # One dict per group per reading, built by zipping whole columns (no per-field indexing).
    groups = []
    for group, fields in GROUPS.items():
        names = tuple(fields)
        columns = [_to_python_list(frame[flat_name(group, f)].to_numpy(), t) for f, t in fields.items()]
        groups.append((group, [dict(zip(names, values)) for values in zip(*columns)]))
    (g1, solar), (g2, battery), (g3, load), (g4, price) = groups
    net = _to_python_list(frame[NET_GRID_FLOW].to_numpy(), float)
    for stamp, device, s, b, h, p, n in zip(stamps, devices, solar, battery, load, price, net):
        yield {TIMESTAMP: stamp, DEVICE_ID: device, g1: s, g2: b, g3: h, g4: p, NET_GRID_FLOW: n}


def to_jsonl(frame: pd.DataFrame) -> bytes:
    """Spec-shaped readings as JSON Lines, exactly as ``orjson.dumps`` writes each reading of
    :func:`frame_to_nested` (a test holds the two equal byte for byte), three times faster.

    Rather than a dict per group per reading, orjson (a compiled encoder that writes a
    missing value as ``null``, not invalid ``NaN``) encodes whole columns at once, and each
    line is one fill of a template holding the keys.
    """
    if frame.empty:
        return b""
    key = lambda name: orjson.dumps(name).replace(b"%", b"%%")  # noqa: E731
    template = b"{" + key(TIMESTAMP) + b":%s," + key(DEVICE_ID) + b":%s"
    columns = [orjson.dumps(_timestamps(frame))[1:-1].split(b","), _encoded_text(frame[DEVICE_ID])]
    for group, fields in GROUPS.items():
        template += b"," + key(group) + b":{" + b",".join(key(f) + b":%s" for f in fields) + b"}"
        for field, typ in fields.items():
            values = frame[flat_name(group, field)]
            columns.append(_encoded_text(values) if typ is str else _encoded(values.to_numpy(), typ))
    template += b"," + key(NET_GRID_FLOW) + b":%s}\n"
    columns.append(_encoded(frame[NET_GRID_FLOW].to_numpy(), float))
    return b"".join([template % row for row in zip(*columns)])


def _timestamps(frame: pd.DataFrame) -> list[str]:
    """The readings' ``timestamp`` values: UTC, whole seconds, ``+00:00``."""
    seconds = frame[TS].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    return [f"{stamp}+00:00" for stamp in np.datetime_as_string(seconds, unit="s").tolist()]


def _encoded(values: np.ndarray, typ: type) -> list[bytes]:
    """Each number's JSON text, from one encoder call per column (orjson writes NaN and
    infinities as ``null``, as it does for the Python floats of :func:`frame_to_nested`)."""
    if typ is float:
        encoded = orjson.dumps(np.ascontiguousarray(values, dtype="float64"), option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        encoded = orjson.dumps(_to_python_list(values, typ))
    return encoded[1:-1].split(b",")


def _encoded_text(values: pd.Series) -> list[bytes]:
    """Each string's JSON text (encoded once per distinct value: any character may occur)."""
    texts = values.astype(str).tolist()
    encoded = {text: orjson.dumps(text) for text in set(texts)}
    return [encoded[text] for text in texts]


def _to_python_list(values: np.ndarray, typ: type) -> list[Any]:
    if typ is float:
        floats = np.asarray(values, dtype="float64")
        return [None if v != v else v for v in floats.tolist()]
    if typ is int:
        return [None if v is None or v is pd.NA else int(v) for v in pd.array(values, dtype="Int64").tolist()]
    return [str(v) for v in values]


def nested_to_frame(readings: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Collect spec-shaped readings into a flat frame."""
    rows = [flatten(r) for r in readings]
    return coerce_frame(pd.DataFrame(rows, columns=list(COLUMNS))) if rows else empty_frame()


def rows_to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Collect flat rows (from any store) into a flat frame."""
    rows = list(rows)
    return coerce_frame(pd.DataFrame(rows, columns=list(COLUMNS))) if rows else empty_frame()


def frame_to_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Flat rows with plain Python values (``None`` for missing), for JSON encoders and drivers."""
    columns = {c: _to_python_list(frame[c].to_numpy(), FIELD_TYPES[c]) for c in FIELD_TYPES}
    stamps = [format_ts(t) for t in frame[TS]]
    devices = frame[DEVICE_ID].astype(str).tolist()
    return [
        {DEVICE_ID: devices[i], TS: stamps[i], **{c: columns[c][i] for c in FIELD_TYPES}}
        for i in range(len(frame))
    ]


def utc_now() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(timezone.utc))


#: Static description of a site, stored beside its readings (edge ``sites`` table, cloud
#: ``sites`` table) so cloud jobs know where a device is and what it has.
SITE_FIELDS: dict[str, type] = {
    "device_id": str,
    "latitude": float,
    "longitude": float,
    "altitude_m": float,
    "timezone": str,
    "country": str,
    "pv_capacity_kw": float,
    "tilt_degrees": float,
    "azimuth_degrees": float,
    "inverter_kw": float,
    "battery_capacity_kwh": float,
    "battery_max_charge_kw": float,
    "battery_max_discharge_kw": float,
    "battery_round_trip_efficiency": float,
    "battery_min_soc": float,
    "battery_max_soc": float,
    "has_ev": bool,
    "config_json": str,
}


def grid_flow_kw(load_kw, solar_kw, battery_kw):
    """The grid flow of the contract's balance, ``net_grid_flow = load + battery - solar``
    (import and charge positive). Arrays or floats; NaN where any term is."""
    return load_kw + battery_kw - solar_kw


def house_load_kw(net_kw, solar_kw, battery_kw):
    """The house load from the site's balance: the contract's ``net_grid_flow = load +
    battery - solar`` (battery positive when it charges, grid when the site imports) solved
    for the load. Arrays or floats; NaN where any term is."""
    return net_kw + solar_kw - battery_kw
