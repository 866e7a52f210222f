"""``--import FILE --device-id ID``: measured site data (CSV, Excel, Parquet or Green Button
XML, :mod:`cloud.sync.green_button`) into the cloud store through the sync's validation and
upsert path, in chunks, so a file of any length imports in bounded memory (a Green Button
feed's readings are held whole: a year of quarter hours is 35,000 of them). A file of one
state change per row (Home Assistant's history) is read as :mod:`cloud.sync.event_files`
says; the rest of this applies to one reading per row.

The file has a time column (:mod:`cloud.sync.timestamps`) and any of the contract's fields,
under their own names or renamed with a column map
(``pv_w=solar_generation_kw,load=home_load_total_load_kw``); columns mapped to one field are
summed (two inverters make the home's PV), one mapped to ``-field`` subtracted (a meter's
export from its import). Power columns (``*_kw``) may be in W or kW, be
energy per reading (Wh or kWh over the series' own interval, turned into the mean kW of
that interval), or a meter's running total (the mean kW since the total before it), as
``--units`` says, else as the file's header says of the column
(:mod:`cloud.sync.file_headers`). Any regular interval is kept as is (no resampling) and
gaps stay gaps; times that label each interval by its start (a ``period_start`` column, or
``--time-label start``) are moved to its end, as every reading is labelled. Fields the
file lacks stay empty: nothing is derived or invented; a reading already stored keeps them
(two files of one home, PV from one and load from the other, make one series), and so it
keeps a field whose cell is blank in this file: a blank is a gap, never a value. A row that
cannot be stored (an unreadable or impossible time, a value that is not a number or is out
of range) goes to quarantine with its line and reason; the others go on. After the import,
:mod:`cloud.sync.plausibility` reports what the series says about its logger.

Several files of one site import as one (``--import`` repeated, :func:`import_files`): a
grid meter's import and export downloaded apart are joined by time into its grid flow.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from cloud.feature_engineering.job import rewind
from cloud.feature_engineering.physics import solar_config
from cloud.job_status import record_failure
from cloud.site_steps import STEP_COLUMNS, balance_formula, balance_lacks, filled_columns, no_load_reason
from cloud.store import schema as s
from cloud.store.base import CloudStore
from cloud.sync import event_files as ev
from cloud.sync.event_files import event_columns
from cloud.sync.file_headers import Header
from cloud.sync.job import DEFAULT_BATCH_SIZE, SyncResult
from cloud.sync.meter_files import BEYOND, Dialect, MeterFile, check_meter_path, open_meter_file
from cloud.sync.plausibility import Finding, Plausibility, interval_of
from cloud.sync.retry import RetryPolicy
from cloud.sync.timestamps import (
    EXPECTED,
    TimeReader,
    find_time_columns,
    labels_start,
    names_a_time,
    names_utc,
    numeric_date_format,
    time_texts,
    wide_day,
)
from cloud.sync.validation import validate
from der_core import der_data as dd
from der_core.cli_support import duration, progress
from der_core.config import SolarConfig, check_zone
from der_core.errors import UsageError

log = logging.getLogger(__name__)

JOB = "cloud_import"
#: What a file's power columns hold: power, energy per reading, or a meter's running total.
POWER, PER_READING, TOTAL = "power", "energy per reading", "meter total"
#: A file's unit for its power columns: (factor to kW, or to kWh; what the values are).
UNITS: dict[str, tuple[float, str]] = {
    "W": (1e-3, POWER), "kW": (1.0, POWER), "Wh": (1e-3, PER_READING), "kWh": (1.0, PER_READING),
    "Wh-total": (1e-3, TOTAL), "kWh-total": (1.0, TOTAL),
}
#: A meter total's step longer than this many intervals spans a gap: its energy is known,
#: not when within the gap it flowed, so no reading's power can be told from it.
GAP_INTERVALS = 1.5
#: The quarantine key of a row without a usable time: this instant plus the row's line in
#: seconds, so every such row keeps its own key (``quarantine`` needs a ``ts``).
NO_TIME = pd.Timestamp("1970-01-01", tz="UTC")
LINE = "line"
#: How far a logger's clock may run ahead of the importing machine's before a time counts as
#: not yet measured.
CLOCK_SLACK = pd.Timedelta(minutes=15)
#: No meter file holds a reading from before this: an earlier time is a misread one (a
#: format without a date reads as 1900-01-01, a placeholder year 0001, Unix times in the
#: wrong unit), and stored it would become the site's oldest history.
EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
_POWER_COLUMNS = tuple(c for c in dd.NUMERIC_COLUMNS if c.endswith("_kw"))
#: Where a power column's unit comes from when neither the file nor ``--units`` names one.
UNSAID = "by default: the file names no unit"


@dataclass(frozen=True)
class ImportOptions:
    device_id: str
    column_map: dict[str, str] = field(default_factory=dict)
    units: str | None = None  # None: the file's header's, else kW
    timezone: str = "UTC"
    zone_source: str = ""  # where the zone came from, when not from --timezone
    timestamp_column: str | None = None
    timestamp_format: str | None = None
    longitude: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    time_label: str | None = None  # "start" or "end" of each reading's interval; None: the time column's name says
    #: Columns (or entities) counted negatively in their field's sum, mapped as ``COLUMN=-field``
    #: (a meter's export against its import); set from ``column_map`` itself.
    negated: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        negated = {c for c, f in self.column_map.items() if f.startswith("-")}
        if negated:
            object.__setattr__(self, "column_map", {c: f.removeprefix("-") for c, f in self.column_map.items()})
            object.__setattr__(self, "negated", self.negated | negated)
        problem = dd.device_id_problem(self.device_id)
        if problem is not None:
            raise UsageError(f"--device-id: {problem}")
        if self.units is not None and self.units not in UNITS:
            raise UsageError(f"--units {self.units!r}: expected one of {', '.join(UNITS)}")
        if self.time_label not in (None, "start", "end"):
            raise UsageError(f"--time-label {self.time_label!r}: expected start or end")
        if self.longitude is not None and not -180 <= self.longitude <= 180:
            raise UsageError(f"--longitude {self.longitude:g}: expected degrees east in [-180, 180]")

    @classmethod
    def from_args(cls, args: argparse.Namespace, site_zone: str | None = None) -> ImportOptions:
        """The command line's options; times without an offset are read in ``--timezone``,
        else in ``site_zone`` (the declared site's: a home's logger keeps the home's clock),
        else in UTC."""
        if not args.device_id:
            raise UsageError("--import needs --device-id ID: the device the file's readings belong to")
        zone, source = ((args.timezone, "") if args.timezone else (site_zone, "the declared site's zone") if site_zone
                        else ("UTC", "no --timezone and no declared site"))
        try:
            check_zone(zone)
        except ValueError as error:
            raise UsageError(f"--timezone: {error}") from None
        return cls(args.device_id, parse_column_map(args.column_map), args.units, zone, source,
                   args.timestamp_column, args.timestamp_format, args.longitude, time_label=args.time_label)

    @classmethod
    def each_file(cls, args: argparse.Namespace, site_zone: str | None = None) -> list[ImportOptions]:
        """One file's options per ``--import``: they share every flag but ``--column-map``,
        given once for all the files or once for each, in their order (an import and an
        export download name their one column alike, and count it with opposite signs)."""
        files, maps = args.import_file, args.column_map or [None]
        if len(maps) not in (1, len(files)):
            raise UsageError(f"--column-map is given {len(maps)} times for {len(files)} --import files; expected "
                             "it once for all of them or once for each, in the same order")
        maps = maps * len(files) if len(maps) == 1 else maps
        return [cls.from_args(argparse.Namespace(**{**vars(args), "column_map": text}), site_zone) for text in maps]


@dataclass
class ImportResult(SyncResult):
    file: str = ""
    device_id: str = ""
    interval: pd.Timedelta | None = None
    findings: list[Finding] = field(default_factory=list)
    columns_not_imported: list[str] = field(default_factory=list)
    entities_not_imported: list[str] = field(default_factory=list)
    wall_clock: bool = False  # the file's times carry no offset: read in the import's zone
    utc_named: str = ""  # the time column whose name says UTC, read so over the import's zone
    moved: str | None = None  # the time column whose times label interval starts, moved to the ends
    first_stored: pd.Timestamp | None = None  # the earliest reading stored
    features_rewound: list[str] = field(default_factory=list)  # feature versions to rewrite from first_stored
    mapped_by_file: dict[str, str] = field(default_factory=dict)  # field -> its columns, as the file itself maps them
    units_read: dict[str, str] = field(default_factory=dict)  # columns -> their unit and where it was read
    formats_read: dict[str, str] = field(default_factory=dict)  # time columns -> the numeric dates' pattern read
    written_once: list[str] = field(default_factory=list)  # days whose repeated autumn hour the file wrote once
    #: field -> (times, first, last) where files joined into it lacked a reading and it was quarantined
    unmatched: dict[str, tuple[int, pd.Timestamp, pd.Timestamp]] = field(default_factory=dict)
    replaced: dict[str, tuple[int, pd.Timestamp, pd.Timestamp]] = field(default_factory=dict)  # field -> changed values
    released: int = 0  # rows an earlier import of the same file quarantined that this one stored
    #: the import's sources (``import:NAME``) an earlier import left quarantined rows of this device under
    holding: set[str] = field(default_factory=set)

    def stored_from(self, ts: pd.Timestamp) -> None:
        self.first_stored = ts if self.first_stored is None else min(self.first_stored, ts)

    def as_dict(self) -> dict:
        minutes = None if self.interval is None else self.interval.total_seconds() / 60
        return {"file": self.file, "run_id": self.run_id, "rows_stored": self.rows_synced,
                "rows_quarantined": self.rows_quarantined, "released_from_quarantine": self.released,
                "interval_minutes": minutes,
                "columns_not_imported": self.columns_not_imported, "entities_not_imported": self.entities_not_imported,
                "times_moved_to_interval_end": self.moved is not None, "features_rewound": self.features_rewound,
                "mapped_by_file": self.mapped_by_file, "units_read": self.units_read,
                "time_formats_read": self.formats_read, "repeated_hour_written_once": self.written_once,
                "replaced": {f: {"values": n, "from": dd.format_ts(a), "to": dd.format_ts(b)}
                             for f, (n, a, b) in self.replaced.items()},
                "unmatched": {f: {"times": n, "from": dd.format_ts(a), "to": dd.format_ts(b)}
                              for f, (n, a, b) in self.unmatched.items()},
                "checks": [vars(f) for f in self.findings]}


#: One ``FILE_COLUMN=field`` pair: the column runs to the first ``=`` and may hold commas
#: (``Leistung, AC (W)``); the field, a name without commas, runs to the next comma.
_PAIR = re.compile(r"\s*(?P<source>.*?)\s*=\s*(?P<target>[^,=]*?)\s*(?:,|$)")


def parse_column_map(text: str | None) -> dict[str, str]:
    """``"a=solar_generation_kw,b=home_load_total_load_kw"`` -> ``{"a": ..., "b": ...}``; a
    column's name may hold commas and ``=`` signs, as the field after its last ``=`` ends the
    pair. A field led by ``-`` counts its column negatively in the field's sum
    (``export=-net_grid_flow_kw``). A column mapped to two fields is refused: which the owner
    meant cannot be told, and the first would be dropped without a word."""
    mapping: dict[str, str] = {}
    text, at = (text or "").strip().strip(","), 0
    while at < len(text):
        if text[at] in ", ":  # an empty pair, or the space after a comma
            at += 1
            continue
        pair = _PAIR.match(text, at)
        if pair is None or pair.end() == at:
            shown = text[at:].split(",")[0].strip()
            raise UsageError(f"--column-map {shown!r}: expected FILE_COLUMN=field pairs separated by commas")
        source, target, at = pair.group("source"), pair.group("target"), pair.end()
        if not source or not target:
            raise UsageError(f"--column-map {pair.group(0).strip(' ,')!r}: expected FILE_COLUMN=field pairs "
                             "separated by commas")
        field_name = target.removeprefix("-").strip()
        if field_name not in dd.FIELD_TYPES:
            raise UsageError(f"--column-map {f'{source}={target}'!r}: {field_name!r} is not a reading field; "
                             f"expected one of {', '.join(dd.FIELD_TYPES)}")
        if target.startswith("-") and field_name not in dd.NUMERIC_COLUMNS:
            raise UsageError(f"--column-map {f'{source}={target}'!r}: only a number field is counted negatively")
        mapped = f"-{field_name}" if target.startswith("-") else field_name
        if mapping.get(source, mapped) != mapped:
            raise UsageError(f"--column-map: column {source!r} is mapped to {mapping[source]} and to {mapped}; "
                             "expected each column once")
        mapping[source] = mapped
    return mapping


@dataclass
class _Plan:
    """How one file's chunks become readings: decided once, from its header."""

    options: ImportOptions
    time_columns: tuple[str, ...]
    sources: dict[str, tuple[str, ...]]  # reading field -> the file columns (or entities) summed into it
    times: TimeReader
    dialect: Dialect = Dialect.PLAIN
    ignored: list[str] = field(default_factory=list)  # file columns that are no reading field
    events: tuple[str, str] | None = None  # an event file's (entity, state) columns
    last_totals: dict[str, tuple[int, float]] = field(default_factory=dict)  # per column: the newest total (us, value)
    interval: pd.Timedelta | None = None
    units: dict[str, str] = field(default_factory=dict)  # power field -> its unit in the file (kW without one)
    starts: bool = False  # the times label each reading's interval by its start
    unit_cells: dict[str, tuple[str, str]] = field(default_factory=dict)  # units column -> (its column, its unit)
    units_from: dict[str, str] = field(default_factory=dict)  # power field -> where its unit was read, if not --units
    seen: list[np.ndarray] = field(default_factory=list)  # each earlier chunk's stored times (us)
    format_read: str | None = None  # the numeric dates' pattern read from the file's first times

    @property
    def fields(self) -> list[str]:
        return list(self.sources)

    def label(self, field_name: str) -> str:
        """The file's name for a field's values: its column, or its columns' sum."""
        return "".join(f"{('-' if not k else ' - ') if c in self.options.negated else ' + ' if k else ''}{c}"
                       for k, c in enumerate(self.sources[field_name]))

    def kind(self, field_name: str) -> str:
        """What a field's columns hold in the file: power, energy per reading, or a meter
        total (which need the series' interval, refused without one)."""
        unit = self.units.get(field_name, "kW")
        kind = UNITS[unit][1]
        if kind != POWER and self.interval is None:
            raise UsageError(f"{self.label(field_name)} in {unit} ({kind}) needs at least two readings to know the "
                             "interval; expected a regular series")
        return kind


def plan_columns(columns: list[str], options: ImportOptions, source: str, dialect: Dialect = Dialect.PLAIN,
                 header: Header | None = None) -> _Plan:
    clocks = wide_day(columns)
    if clocks:  # a column mapped would store one interval's reading a day, at the date's start
        raise UsageError(f"{source}: a day per row with an interval per column ({clocks[0]!r} … {clocks[-1]!r}) is not "
                         "read; expected a reading per row, such as the distributor's NEM12 download")
    unknown = [c for c in options.column_map if c not in columns]
    if unknown:
        raise UsageError(f"{source}: --column-map names {unknown}, not in the file; columns: {columns}")
    header = header or Header(columns)
    time_columns = ((header.time_column,) if header.time_column and options.timestamp_column is None
                    else find_time_columns(columns, options.timestamp_column, source))
    values = [c for c in columns if c not in time_columns]
    named = _by_field((c, options.column_map[c]) for c in values if c in options.column_map)
    # a column under a field's own name, unless the map gives that field others
    named |= {c: (c,) for c in values if c not in options.column_map and c not in named}
    sources = {f: named[f] for f in dd.FIELD_TYPES if f in named}
    if not sources:
        raise UsageError(f"{source}: no reading fields found; map the file's columns with --column-map "
                         f"FILE_COLUMN=field (columns: {columns})")
    _check_sums(sources, source)
    unit_cells = {header.unit_columns[c]: (c, header.units[c]) for cs in sources.values() for c in cs
                  if c in header.unit_columns}
    ignored = sorted(c for c in set(columns) - {c for cs in sources.values() for c in cs} - set(time_columns)
                     - set(unit_cells) if not names_a_time(c))
    read = {f: _unit_of(f, sources[f], header, options, source) for f in _POWER_COLUMNS if f in sources}
    units = {f: unit for f, (unit, _) in read.items()}
    own = time_columns == (header.time_column,)  # the header's format is its time column's
    times = TimeReader(_zone_of(time_columns, options, source),
                       options.timestamp_format or (header.time_format if own else None))
    starts = options.time_label == "start" if options.time_label else labels_start(time_columns)
    if starts and any(UNITS[u][1] == TOTAL for u in units.values()):
        raise UsageError(f"{source}: the times label interval starts ({' + '.join(time_columns)}), but a meter total "
                         "is read at an instant, not over an interval; expected --time-label end")
    return _Plan(options, time_columns, sources, times, dialect, ignored, units=units, starts=starts,
                 unit_cells=unit_cells, units_from={f: where for f, (_, where) in read.items() if where})


def _zone_of(time_columns: tuple[str, ...], options: ImportOptions, source: str) -> str:
    """The zone a file's wall-clock times are read in: UTC where the time column's name says
    so (:func:`names_utc`), over the declared site's zone, which would move every reading by
    the site's offset; a ``--timezone`` of another offset contradicts the file and is
    refused, as a guess between the two would store every reading at the wrong instant."""
    if not names_utc(time_columns):
        return options.timezone
    zone = ZoneInfo(options.timezone)
    if options.zone_source or all(zone.utcoffset(dt.datetime(2024, m, 1)) == dt.timedelta(0) for m in (1, 7)):
        return "UTC"
    raise UsageError(f"{source}: the time column {' + '.join(time_columns)!r} says its times are UTC, but --timezone "
                     f"{options.timezone}; expected --timezone UTC or none")


def _by_field(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """``(column or entity, field)`` pairs as each field's columns, in file order: the
    columns of one field are summed."""
    grouped: dict[str, list[str]] = {}
    for name, field_name in pairs:
        grouped.setdefault(field_name, []).append(name)
    return {f: tuple(names) for f, names in grouped.items()}


def _check_sums(sources: dict[str, tuple[str, ...]], source: str) -> None:
    """Columns mapped to one field are summed (two inverters' PV make the home's): only a
    number field can be a sum."""
    for field_name, columns in sources.items():
        if len(columns) > 1 and field_name not in dd.NUMERIC_COLUMNS:
            raise UsageError(f"{source}: columns {list(columns)} are all mapped to {field_name}; expected one column "
                             "for a field that is not a number")


def _unit_of(field_name: str, columns: tuple[str, ...], header: Header, options: ImportOptions,
             source: str) -> tuple[str, str | None]:
    """A power field's unit, and where it was read (None: ``--units``): ``--units``, else
    what the file says of its columns (the units row, else a unit closing the name), else
    kW, which the report then says, since a file in W read as kW is a thousand times off.
    Refused rather than guessed: ``--units`` that contradicts the file, a unit that is no
    power or energy, energy the file does not say is a reading's or a running total
    (without ``--units``), summed columns in different units."""
    units, where = [], None
    for column in columns:
        unit = header.unit_of(column)
        if unit is None:
            units.append(options.units or "kW")
            if options.units is None:
                where = where or UNSAID
            continue
        if options.units is None:
            where = where or f"by {unit.where}"
        if not unit.known:
            raise UsageError(f"{source}: column {column!r} is in {unit.name} by {unit.where}; expected power or "
                             f"energy (W, kW, Wh, kWh) for {field_name}")
        fixed = unit.import_unit
        if options.units is not None:
            # energy the file leaves unqualified agrees with either of its --units
            agrees = options.units == fixed if fixed is not None else options.units.removesuffix("-total") == unit.name
            if not agrees:
                raise UsageError(f"{source}: --units {options.units} but column {column!r} is in {fixed or unit.name} "
                                 f"by {unit.where}; expected them to agree")
            units.append(options.units)
        elif fixed is None:
            raise UsageError(f"{source}: column {column!r} is energy in {unit.name} by {unit.where}, for {field_name}; "
                             f"expected --units {unit.name} (energy per reading) or --units {unit.name}-total "
                             "(a meter's running total)")
        else:
            units.append(fixed)
    if len(set(units)) > 1:
        raise UsageError(f"{source}: columns {list(columns)} summed into {field_name} are in {', '.join(units)}; "
                         "expected one unit")
    return units[0], where


#: The largest count a reading may carry: every whole number below it is exact as a float.
WHOLE_NUMBER_LIMIT = 2.0**53


def to_readings(raw: pd.DataFrame, plan: _Plan, where: str = LINE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One chunk of the file as ``(readings, refused)``: a flat reading frame with a ``line``
    column for the rows whose time and numbers could be read, and the others as quarantine
    rows (their file cells kept as they were, a ``reason`` each)."""
    ts, reasons = read_times(raw, plan)
    timed, micros = ts.notna().to_numpy(), ts.to_numpy(dtype="datetime64[us]").astype(np.int64)
    earlier = np.zeros(len(ts), dtype=bool)  # the time of a row an earlier chunk stored
    if plan.seen and timed.any() and micros[timed].min() <= max(chunk[-1] for chunk in plan.seen if len(chunk)):
        earlier = timed & np.isin(micros, np.concatenate(plan.seen))  # only where a file is not in time order
    repeated = ts.notna() & (ts.duplicated(keep="first") | earlier) & (reasons == "")
    reasons[repeated] = [f"time {t:%Y-%m-%d %H:%M:%S}Z repeats an earlier row's" for t in ts[repeated]]
    if plan.interval is None:
        plan.interval = interval_of(ts[reasons == ""])
    if plan.starts:  # a reading is the mean of the interval ending at its time
        if plan.interval is None:
            raise UsageError(f"times label interval starts ({' + '.join(plan.time_columns)}): at least two readings "
                             "are needed to know the interval; expected a regular series")
        ts = ts + plan.interval
    out = pd.DataFrame({dd.DEVICE_ID: plan.options.device_id, dd.TS: ts}, index=raw.index)
    for column in dd.FIELD_TYPES:
        out[column] = None if column not in plan.sources else raw[plan.sources[column][0]].to_numpy()
    numbers = {}
    for name in (n for c in dd.NUMERIC_COLUMNS if c in plan.sources for n in plan.sources[c]):
        text = raw[name]
        numbers[name] = plan.dialect.numbers(text)
        wrong = numbers[name].isna() & text.notna() & (text.astype("string").str.strip() != "")
        reasons[wrong] = [_join(r, f"{name} {dd.shown(v)} is not a number") for r, v in zip(reasons[wrong], text[wrong])]
    for beside, (column, unit) in plan.unit_cells.items():  # the unit is the first reading's: a row's other one is refused
        cells = raw[beside].astype("string").str.strip().str.strip("[]() ").str.lower().fillna("")
        wrong = (cells != unit.lower()) & (cells != "") & raw[column].notna()
        reasons[wrong] = [_join(r, f"{beside} {dd.shown(v)} is not {unit}, the unit of {column} in the first reading")
                          for r, v in zip(reasons[wrong], raw[beside][wrong])]
    readable = (reasons == "").to_numpy()  # each total counts from the one before, whatever the other columns say
    for column in (c for c in dd.NUMERIC_COLUMNS if c in plan.sources):
        total = None
        for name in plan.sources[column]:  # a missing addend leaves the sum missing: nothing is invented
            value = numbers[name]
            if plan.kind(column) == TOTAL:  # each register counts on its own; their sum need not only rise
                value = pd.Series(_totals_to_kw(value.to_numpy(dtype="float64"), name, out[dd.TS], plan, reasons,
                                                readable), index=value.index)
            value = -value if name in plan.options.negated else value
            total = value if total is None else total + value
        out[column] = total
        if column in dd.INT_COLUMNS:
            # A count is stored as a whole number: one beyond what a float holds exactly is no count.
            huge = out[column].notna() & ~(out[column].abs() < WHOLE_NUMBER_LIMIT)
            reasons[huge] = [_join(r, f"{plan.label(column)} {dd.shown(v)} is not a whole number below "
                                      f"{WHOLE_NUMBER_LIMIT:.0e}") for r, v in zip(reasons[huge], out[column][huge])]
    _to_kw(out, plan)
    refused = reasons != ""
    if (~refused.to_numpy() & timed).any():
        plan.seen.append(np.sort(micros[~refused.to_numpy() & timed]))
    readings = dd.coerce_frame(out[~refused]).assign(**{LINE: raw.index[~refused]})
    return readings, refused_rows(raw, ts, reasons, refused.to_numpy(), plan.options.device_id, where)


def refused_rows(raw: pd.DataFrame, ts: pd.Series, reasons: pd.Series, refused: np.ndarray, device_id: str,
                 where: str) -> pd.DataFrame:
    """Quarantine rows for the file rows ``refused``: their cells as they were, their time
    (or :data:`NO_TIME` plus the line), and a reason led by the line."""
    index = raw.index[refused]
    rows = raw[refused]
    rows = rows.drop(columns=[c for c in rows.columns if str(c).startswith(BEYOND) and rows[c].isna().all()])
    no_time = pd.Series(NO_TIME + pd.to_timedelta(raw.index, unit="s"), index=raw.index)
    return pd.DataFrame({dd.DEVICE_ID: device_id, dd.TS: ts[refused].fillna(no_time[refused]), LINE: index,
                         "file_row": _as_text_times(rows).to_dict("records"),
                         s.REASON: located(reasons[refused], where)}, index=index)


def _as_text_times(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows' cells with each time (a sheet's date cell, a Parquet timestamp) as ISO 8601
    text: the store writes cells as JSON, whose encoder holds times in nanoseconds and fails
    on a year-9999 cell, the very kind of row quarantine is for."""
    def text(value: object) -> object:
        return value.isoformat() if isinstance(value, (dt.datetime, dt.date, dt.time)) else value

    return rows.apply(lambda column: column.astype(object).map(text)
                      if pd.api.types.is_datetime64_any_dtype(column) or column.dtype == object else column)


def read_times(raw: pd.DataFrame, plan: _Plan) -> tuple[pd.Series, pd.Series]:
    """The chunk's times and a reason for each that cannot be stored; a time later than the
    import itself (beyond :data:`CLOCK_SLACK`) is one: no meter has measured it yet, and it
    is a misread format or zone, which would also make the site's newest reading, from which
    every job counts back, lie in the future. So is one before :data:`EARLIEST`."""
    ts, reasons = plan.times.read(time_texts(raw, plan.time_columns))
    beyond = [c for c in raw.columns if str(c).startswith(BEYOND)]
    if beyond:
        wide = raw[beyond].notna().any(axis=1).to_numpy()
        # which column each cell belongs to cannot be told, so no other reason is worth giving
        reasons[wide] = (f"the row holds more cells than its header's {len(raw.columns) - len(beyond)} names; "
                         "expected one cell per column (a decimal comma in a comma-separated file?)")
    now = dd.utc_now()
    ahead = ts.notna() & (ts > now + CLOCK_SLACK) & (reasons == "")
    reasons[ahead] = [f"time {t:%Y-%m-%d %H:%M:%S}Z is after the import ({now:%Y-%m-%d %H:%M}Z); expected a measured "
                      "time (check --timezone and --timestamp-format)" for t in ts[ahead]]
    early = ts.notna() & (ts < EARLIEST) & (reasons == "")
    reasons[early] = [f"time {t.tz_convert(None)}Z is before {EARLIEST:%Y}; expected a measured time (check "
                      "--timestamp-format: a pattern without a date reads as 1900-01-01)" for t in ts[early]]
    return ts, reasons


def located(reasons: pd.Series, where: str) -> pd.Series:
    """Each reason led by the line (or row) it belongs to, from the Series' index."""
    return pd.Series([f"{where} {n}: {r}" for n, r in reasons.items()], index=reasons.index, dtype=object)


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


def _to_kw(out: pd.DataFrame, plan: _Plan) -> None:
    """The power fields in kW: power scaled, energy per reading over the interval, a meter
    total's mean power since the one before it (:func:`_totals_to_kw`) scaled."""
    for column in (c for c in _POWER_COLUMNS if c in plan.sources):
        factor, kind = UNITS[plan.units.get(column, "kW")][0], plan.kind(column)
        if kind == PER_READING:
            factor /= plan.interval / pd.Timedelta(hours=1)
        if factor != 1.0:
            out[column] = out[column] * factor


def _totals_to_kw(totals: np.ndarray, name: str, ts: pd.Series, plan: _Plan, reasons: pd.Series,
                  readable: np.ndarray) -> np.ndarray:
    """A meter's running total as the mean power since the previous total, in the file's
    energy unit per hour, at the later reading: the energy that flowed in the interval it
    closes. The first total (nothing to count from), one after a gap longer than
    :data:`GAP_INTERVALS` intervals (when in the gap the energy flowed is unknown) and one
    below the total before it (a reset or a new meter: counting starts again from it) give
    no power and are quarantined with why; a total missing from a row leaves that row's
    power missing. The previous total is carried from chunk to chunk, column by column."""
    power = np.full(len(totals), np.nan)
    micros = ts.to_numpy(dtype="datetime64[us]").astype(np.int64)
    gap_us = plan.interval / pd.Timedelta(microseconds=1) * GAP_INTERVALS
    hour_us = 3600e6
    last = plan.last_totals.get(name)  # (time in us, total)
    for position in np.flatnonzero(readable & np.isfinite(totals)):
        now, total = int(micros[position]), float(totals[position])
        why = ""
        if last is None:
            why = f"{name} is a meter total; its first reading has none before it to count from"
        elif now <= last[0]:
            reasons.iloc[position] = _join(reasons.iloc[position], f"{name} is a meter total not later than the one "
                                           "before it; expected the file in time order")
            continue  # the total before it stays the one to count from
        elif now - last[0] > gap_us:
            why = (f"{name} is a meter total {(now - last[0]) / 60e6:g} min after the one before it (a gap); "
                   "when in the gap its energy flowed is unknown")
        elif total < last[1]:
            why = f"{name} meter total fell from {last[1]:g} to {total:g} (a reset or a new meter); counting starts again from it"
        else:
            power[position] = (total - last[1]) / ((now - last[0]) / hour_us)
        if why:
            reasons.iloc[position] = _join(reasons.iloc[position], why)
        last = (now, total)
    plan.last_totals[name] = last
    return power


def plan_events(columns: list[str], events: tuple[str, str], options: ImportOptions, source: str,
                dialect: Dialect) -> _Plan:
    """An event file's plan: its entities mapped to fields by ``--column-map``."""
    _, kind = UNITS[options.units or "kW"]
    if kind == PER_READING:
        raise UsageError(f"--units {options.units}: an event file's states are power or a meter's running total; "
                         f"expected one of {', '.join(u for u, (_, k) in UNITS.items() if k != PER_READING)}")
    if not options.column_map:
        raise UsageError(f"{source}: an event file ({', '.join(events)}); map its entities with --column-map "
                         "ENTITY=field, e.g. sensor.pv_power=solar_generation_kw")
    text = [f for f in options.column_map.values() if f not in dd.NUMERIC_COLUMNS]
    if text:
        raise UsageError(f"--column-map: {', '.join(text)} cannot come from an event file; expected numeric fields")
    time_columns = find_time_columns([c for c in columns if c not in events], options.timestamp_column, source)
    sources = _by_field(options.column_map.items())
    unsaid = {} if options.units else {f: UNSAID for f in sources if f in _POWER_COLUMNS}
    return _Plan(options, time_columns, sources, TimeReader(options.timezone, options.timestamp_format), dialect,
                 events=events, units_from=unsaid)


@dataclass
class _Source:
    """One file of an import, opened and planned from its header."""

    meter: MeterFile
    plan: _Plan
    by_file: bool  # the file says what its columns are (Green Button XML, NEM12), and no --column-map overrode it

    @property
    def name(self) -> str:
        return self.meter.path.name


def _open_source(path: Path, options: ImportOptions) -> _Source:
    meter = open_meter_file(path, options.batch_size, options.timestamp_column)
    by_file = bool(meter.default_map and not options.column_map)
    if by_file:  # a file that says what its columns are
        if meter.default_map_refused:
            raise UsageError(meter.default_map_refused)
        options = dataclasses.replace(options, column_map=meter.default_map)
    events = event_columns(meter.columns)
    plan = (plan_events(meter.columns, events, options, str(path), meter.dialect) if events
            else plan_columns(meter.columns, options, source=str(path), dialect=meter.dialect, header=meter.header))
    return _Source(meter, plan, by_file)


def import_file(path: str | Path, cloud: CloudStore, options: ImportOptions,
                retry: RetryPolicy | None = None) -> ImportResult:
    """Validate and upsert a meter file, recorded in ``pipeline_runs`` as ``cloud_import``;
    a run that fails part-way is recorded as failed (the chunks before it stay stored)."""
    return import_files([path], cloud, [options], retry)


def import_files(paths: list[str | Path], cloud: CloudStore, options: list[ImportOptions],
                 retry: RetryPolicy | None = None) -> ImportResult:
    """Import one meter file, or several downloads of one site joined by time
    (:func:`_import_joined`), each read with its own options, as one ``cloud_import`` run."""
    retry = retry or RetryPolicy()
    for path in paths:
        check_meter_path(path)
    resolved = [Path(p).resolve() for p in paths]
    twice = next((p for k, p in enumerate(paths) if resolved[k] in resolved[:k]), None)
    if twice is not None:  # summed with itself, every value would be stored twice over
        raise UsageError(f"--import {twice} is given twice; expected each file once")
    sources = [_open_source(Path(p), o) for p, o in zip(paths, options, strict=True)]
    joined = len(sources) > 1
    if joined:
        _check_joinable(sources)
    site = _site_row(cloud, options[0].device_id)
    longitude, nameplate_kw, array = _site_facts(site, options[0])
    names = " + ".join(source.name for source in sources)
    run_id = retry.call("start run", lambda: cloud.start_run(JOB, {"file": names, "device_id": options[0].device_id}))
    result = ImportResult(run_id, devices=1, file=names, device_id=options[0].device_id)
    named = [f"import:{source.name}" for source in sources] + ([_joined_source(sources)] if joined else [])
    result.holding = {name for name in named if retry.call("read the quarantine", lambda name=name: cloud.count_rows(
        s.QUARANTINE, {s.SOURCE: name, dd.DEVICE_ID: options[0].device_id}))}
    checks = Plausibility(longitude=array.longitude if array is not None else longitude)
    try:
        if joined:
            _import_joined(sources, cloud, retry, result, checks, nameplate_kw)
        else:
            (_import_events if sources[0].plan.events else _import_chunks)(
                sources[0].meter, sources[0].plan, cloud, retry, result, checks, nameplate_kw)
    except BaseException as error:  # an interrupt as well: a run must never stay "running"
        record_failure(cloud, run_id, result.rows_synced, error)
        raise
    if result.first_stored is not None:
        result.features_rewound = retry.call(
            "rewind features", lambda: rewind(cloud, options[0].device_id, result.first_stored))
    retry.call("finish run", lambda: cloud.finish_run(run_id, "ok", result.rows_synced))
    of = (lambda source, text: f"{source.name}: {text}") if joined else (lambda source, text: text)
    result.interval = sources[0].plan.interval
    everywhere = set.intersection(*(set(source.plan.ignored) for source in sources)) if joined else set()
    result.columns_not_imported = sorted(everywhere)  # a column every file leaves out is named once
    for source in sources:
        plan = source.plan
        result.columns_not_imported += [of(source, c) for c in plan.ignored if c not in everywhere]
        if source.by_file:
            result.mapped_by_file |= {f: of(source, plan.label(f)) for f in plan.sources}
        result.units_read |= {of(source, plan.label(f)): f"{plan.units.get(f, 'kW')} {where}"
                              for f, where in plan.units_from.items()}
        result.wall_clock |= plan.times.offsets is False
        if plan.times.offsets is False and plan.times.zone != plan.options.timezone:
            result.utc_named = of(source, " + ".join(plan.time_columns))
        result.written_once += [of(source, day) for day in plan.times.written_once()]
        if plan.format_read:
            result.formats_read[of(source, " + ".join(plan.time_columns))] = plan.format_read
        if plan.starts:
            moved = " + ".join(plan.time_columns)
            result.moved = of(source, moved) if result.moved is None else f"{result.moved}, {of(source, moved)}"
    result.findings = checks.report(longitude, nameplate_kw, array)
    result.findings.append(retry.call("read the site's meters", lambda: _house_load(cloud, options[0].device_id, site,
                                                                                       sources)))
    return result


def _house_load(cloud: CloudStore, device_id: str, site: dict[str, Any], sources: list[_Source]) -> Finding:
    """Where the jobs will take the site's house load from, over everything stored of it so
    far: measured, the balance of its meters, or (a warning) nowhere yet, naming the meter
    to import. A home's files come one at a time, and a battery whose log is left out leaves
    every job without a load, which its owner learns here rather than from a failed plan."""
    if any(dd.LOAD_TOTAL in source.plan.fields for source in sources):
        return Finding("house load", "ok", f"measured ({dd.LOAD_TOTAL})")
    stored = cloud.read_readings(device_id, columns=list(STEP_COLUMNS))
    read = filled_columns(stored)
    if dd.LOAD_TOTAL in read:
        return Finding("house load", "ok", f"measured ({dd.LOAD_TOTAL}, from an earlier import)")
    if not balance_lacks(read, site):
        return Finding("house load", "ok", f"none measured: the jobs take it from the balance, {balance_formula(site)}")
    return Finding("house load", "warning", no_load_reason(read, site))


def _chunk_readings(meter: MeterFile, plan: _Plan) -> Iterator[tuple[pd.DataFrame, list[tuple[pd.DataFrame, pd.Series]]]]:
    """The file's chunks as ``(good, refused)``: the readings that can be stored (the
    ``line`` column dropped) and the rows that cannot, as ``(rows, reasons)`` pairs for the
    quarantine."""
    for raw in progress(meter.chunks(plan.options.batch_size), total=meter.total_chunks, desc="import", unit="chunk"):
        if plan.times.format is None and plan.times.offsets is None and not plan.seen:  # the first times
            later = (time_texts(chunk, plan.time_columns) for chunk in meter.chunks(plan.options.batch_size))
            plan.format_read = plan.times.format = numeric_date_format(time_texts(raw, plan.time_columns),
                                                                       str(meter.path), later)
        readings, refused = to_readings(raw, plan, meter.where)
        if plan.times.offsets is None and len(raw):
            _no_time_read(raw, plan, meter)
        good, bad, reasons = validate(readings, required=())
        empty = good[plan.fields].isna().all(axis=1).to_numpy()  # a time alone: no reading
        if empty.any():
            reasons = pd.concat([reasons, pd.Series(f"no value in {', '.join(map(plan.label, plan.fields))}",
                                                    index=good.index[empty])])
            bad, good = pd.concat([bad, good[empty]]), good[~empty]
        held = []
        if len(bad):
            held.append((bad, located(reasons.set_axis(bad[LINE]), meter.where)))
        if len(refused):
            held.append((refused.drop(columns=s.REASON), refused[s.REASON]))
        yield good.drop(columns=LINE), held


def _import_chunks(meter: MeterFile, plan: _Plan, cloud: CloudStore, retry: RetryPolicy,
                   result: ImportResult, checks: Plausibility, nameplate_kw: float | None) -> None:
    source = f"import:{meter.path.name}"
    for good, held in _chunk_readings(meter, plan):
        if len(good):
            _upsert_present(cloud, good, plan.fields, retry, result)
            result.stored_from(good[dd.TS].min())
            _release(cloud, source, good, retry, result)
        for rows, reasons in held:  # after the release: a repeat the file refuses beside a good reading stays
            retry.call("quarantine", lambda: cloud.quarantine(rows, reasons, source))  # noqa: B023 (called at once)
            result.rows_quarantined += len(rows)
        checks.interval = plan.interval
        checks.add(good, plan.fields, nameplate_kw)
        result.rows_synced += len(good)
    if result.rows_quarantined:
        log.warning("%s: %d rows quarantined with their reasons (table %s)", meter.path.name,
                    result.rows_quarantined, s.QUARANTINE)


def _joined_source(sources: list[_Source]) -> str:
    """The quarantine's source name of files joined: their names in order of name, so the
    same downloads given in another order are the same source."""
    return "import:" + "+".join(sorted(source.name for source in sources))


def _check_joinable(sources: list[_Source]) -> None:
    """Files are joined row by row on their times, so each must be one reading per row and
    a field several of them fill must be a number (their sum)."""
    for source in sources:
        if source.plan.events:
            raise UsageError(f"{source.meter.path}: an event file ({', '.join(source.plan.events)}) imports alone; "
                             "expected files of one reading per row to join")
    for field_name in dd.TEXT_COLUMNS:
        filling = [source.name for source in sources if field_name in source.plan.sources]
        if len(filling) > 1:
            raise UsageError(f"{field_name} is mapped in {', '.join(filling)}; expected one file for a field that "
                             "is not a number")


def _import_joined(sources: list[_Source], cloud: CloudStore, retry: RetryPolicy, result: ImportResult,
                   checks: Plausibility, nameplate_kw: float | None) -> None:
    """Several downloads of one site, joined by time: a field that more than one file fills
    is their sum (a grid meter's import and export, downloaded apart, are its grid flow with
    the export mapped ``-net_grid_flow_kw``). Each file is read and checked as it would be
    alone, and held (its fields only) until every file is read, since the sum at a time
    needs every file's reading of it. A field's sum where some of its files have no reading
    at that time is unknown: those readings are quarantined naming the files that lack them,
    not stored as a sum of part of them. Files whose shared field comes in different
    intervals are refused before anything is stored: their row-by-row sum is no reading."""
    source_name = _joined_source(sources)
    held, parts = [], []
    for source in sources:
        frames = []
        for good, refused in _chunk_readings(source.meter, source.plan):
            held += [(rows, reasons, f"import:{source.name}") for rows, reasons in refused]
            frames.append(good.set_index(dd.TS)[source.plan.fields])
        parts.append(pd.concat(frames) if frames else pd.DataFrame(columns=source.plan.fields))
    fields = [f for f in dd.FIELD_TYPES if any(f in source.plan.sources for source in sources)]
    for field_name in fields:
        filling = [source for source in sources if field_name in source.plan.sources]
        if len({source.plan.interval for source in filling}) > 1:
            raise UsageError(f"{field_name} is summed from files in different intervals ("
                             + ", ".join(f"{source.name} " + (f"every {duration(source.plan.interval)}" if
                                                              source.plan.interval else "of one reading")
                                         for source in filling)
                             + "); expected one interval, as their sum is taken reading by reading")
    times = pd.DatetimeIndex(np.unique(np.concatenate([part.index.to_numpy(dtype="datetime64[us]") for part in parts])),
                             tz="UTC")
    columns, partial, parts_cut = {}, pd.Series("", index=times, dtype=object), {}
    for field_name in fields:
        filling = [(source, part) for source, part in zip(sources, parts) if field_name in part.columns]
        values = np.column_stack([part[field_name].reindex(times).to_numpy(dtype="float64", na_value=np.nan)
                                  if field_name in dd.NUMERIC_COLUMNS else part[field_name].reindex(times).to_numpy()
                                  for _, part in filling])
        present = ~pd.isna(values)
        if len(filling) == 1:
            columns[field_name] = values[:, 0]
            continue
        whole = present.all(axis=1)
        columns[field_name] = np.where(whole, np.where(present, values, 0.0).sum(axis=1), np.nan)
        parts_cut |= {f"{source.name}: {field_name}": values[:, k] for k, (source, _) in enumerate(filling)}
        halves = np.flatnonzero(present.any(axis=1) & ~whole)
        for row in halves:
            lacking = ", ".join(source.name for (source, _), there in zip(filling, present[row]) if not there)
            partial.iloc[row] = _join(partial.iloc[row], f"{field_name} sums {len(filling)} files; {lacking} has no "
                                                         "reading at this time")
        if len(halves):
            result.unmatched[field_name] = (len(halves), times[halves[0]], times[halves[-1]])
    device = sources[0].plan.options.device_id

    def frame_at(rows: np.ndarray) -> pd.DataFrame:  # the contract's frame of these times, built a batch at a time
        return dd.coerce_frame(pd.DataFrame({dd.DEVICE_ID: device, dd.TS: times[rows],
                                             **{c: columns[c][rows] if c in columns else None for c in dd.FIELD_TYPES}}))

    cut = (partial != "").to_numpy()
    if cut.any():
        rows = frame_at(np.flatnonzero(cut)).assign(**{k: v[cut] for k, v in parts_cut.items()})
        held.append((rows, pd.Series(partial.to_numpy()[cut]), source_name))
    kept = np.flatnonzero(np.column_stack([~pd.isna(columns[f]) for f in fields]).any(axis=1))
    read_every = {f: [source.plan.interval for source in sources
                      if f in source.plan.sources and source.plan.interval is not None] for f in fields}
    checks.interval = min((min(every) for every in read_every.values() if every), default=None)
    checks.field_interval = {f: max(every) for f, every in read_every.items() if every}  # its blanks between readings
    batch_size = sources[0].plan.options.batch_size
    for start in range(0, len(kept), batch_size):
        _store_batch(frame_at(kept[start:start + batch_size]), fields, source_name, cloud, retry, result, checks,
                     nameplate_kw)
    for source, part in zip(sources, parts):  # a file's own rows it refused before and reads well now
        stored = part[part.index.isin(times[kept])]
        _release(cloud, f"import:{source.name}", stored.rename_axis(dd.TS).reset_index(), retry, result)
    for rows, reasons, where in held:  # after the release, which would take a time refused here as well as stored
        retry.call("quarantine", lambda: cloud.quarantine(rows, reasons, where))  # noqa: B023 (called at once)
        result.rows_quarantined += len(rows)


def _store_batch(batch: pd.DataFrame, fields: list[str], source: str, cloud: CloudStore, retry: RetryPolicy,
                 result: ImportResult, checks: Plausibility, nameplate_kw: float | None) -> None:
    """One batch of readings built whole (an event file's grid, joined downloads): validated,
    the rows that fail quarantined, the others' filled fields upserted and checked."""
    good, bad, reasons = validate(batch, required=())
    if len(good):
        _upsert_present(cloud, good, fields, retry, result)
        result.stored_from(good[dd.TS].min())
        _release(cloud, source, good, retry, result)
    if len(bad):
        retry.call("quarantine", lambda: cloud.quarantine(bad, reasons, source))
    checks.add(good, fields, nameplate_kw)
    result.rows_synced += len(good)
    result.rows_quarantined += len(bad)


def _release(cloud: CloudStore, source: str, stored: pd.DataFrame, retry: RetryPolicy, result: ImportResult) -> None:
    """Take out of the quarantine what ``source`` refused before and has now stored: a file
    imported again with its units or columns corrected leaves no refusal of a reading that
    is stored. A refusal goes only where the same source, at the same instant, has now stored
    every field the refused row held: a source is named by its file's name, and another
    file of that name (an inverter's ``export.csv`` beside a meter's) storing other fields
    there leaves the refusal of its namesake's reading standing. A refusal holding no
    reading field (an unreadable time, an event file's state) stays. An import with no
    earlier refusal under its sources (``result.holding``) asks the store nothing."""
    if source not in result.holding or stored.empty:
        return
    device, times = result.device_id, pd.DatetimeIndex(pd.to_datetime(stored[dd.TS], utc=True))
    refused = retry.call("read the quarantine", lambda: cloud.read_frame(
        s.QUARANTINE, {s.SOURCE: source, dd.DEVICE_ID: device}, times.min(), times.max() + pd.Timedelta(microseconds=1)))
    if refused.empty:
        return
    fields = [f for f in dd.FIELD_TYPES if f in stored.columns]
    now = stored.assign(**{dd.TS: times}).drop_duplicates(dd.TS, keep="last").set_index(dd.TS)[fields].notna()
    gone = []
    for at, payload in zip(pd.to_datetime(refused[dd.TS], utc=True), refused[s.PAYLOAD]):
        held = _fields_held(payload)
        if held and at in now.index and all(f in now.columns and bool(now.at[at, f]) for f in held):
            gone.append(at)
    if gone:
        result.released += retry.call("release the quarantine", lambda: cloud.release_quarantine(source, device, gone))


def _fields_held(payload: object) -> list[str]:
    """The reading fields a quarantined row held a value of: its own, or, for a time files
    joined into a sum lacked, the field each file gave a part of (``"FILE: field"``)."""
    if not isinstance(payload, dict):
        return []
    parts = {key.rsplit(": ", 1)[-1] for key, value in payload.items() if ": " in key and value is not None}
    return [f for f in dd.FIELD_TYPES if payload.get(f) is not None or f in parts]


def _upsert_present(cloud: CloudStore, readings: pd.DataFrame, fields: list[str], retry: RetryPolicy,
                    result: ImportResult) -> None:
    """Upsert each reading's filled fields only: a blank cell is a gap of its field in this
    file, not a value to write over what another file stored (a grid meter's night beside an
    inverter's empty PV cell). Rows are grouped by which fields they fill, one upsert each.
    Stored values the file writes over with others are counted first (:func:`_count_replaced`)."""
    _count_replaced(cloud, readings, fields, retry, result)
    filled = readings[fields].notna().to_numpy()
    patterns = filled @ (1 << np.arange(len(fields), dtype=np.int64))
    for pattern in np.unique(patterns):
        these = readings[patterns == pattern]
        present = [f for k, f in enumerate(fields) if pattern >> k & 1]
        retry.call("upsert readings", lambda: cloud.upsert_readings(these, fields=present))  # noqa: B023 (called at once)


def _count_replaced(cloud: CloudStore, readings: pd.DataFrame, fields: list[str], retry: RetryPolicy,
                    result: ImportResult) -> None:
    """Add to ``result.replaced`` the stored values of ``fields`` that these readings change.
    A field holds one value per time, so a second file mapped to a field already imported
    (an export download into the grid flow an import download filled) replaces the first's
    values; the report says so, since nothing else would. The same value again (a file
    imported twice) is no change."""
    ts = readings[dd.TS]
    device = str(readings[dd.DEVICE_ID].iloc[0])
    stored = retry.call("read stored readings", lambda: cloud.read_readings(
        device, ts.min(), ts.max() + pd.Timedelta(microseconds=1), columns=fields))
    if stored.empty:
        return
    both = readings[[dd.TS, *fields]].merge(stored[[dd.TS, *fields]], on=dd.TS, suffixes=("", " stored"))
    for name in fields:
        new, old = both[name], both[f"{name} stored"]
        both_there = (new.notna() & old.notna()).to_numpy(dtype=bool)
        if name in dd.NUMERIC_COLUMNS:  # a value read back through a float is the same value
            changed = both_there & ~np.isclose(new.to_numpy(dtype="float64", na_value=np.nan),
                                               old.to_numpy(dtype="float64", na_value=np.nan), rtol=1e-9, atol=1e-9)
        else:
            changed = both_there & (new != old).to_numpy(dtype=bool)
        if changed.any():
            at = both.loc[changed, dd.TS]
            count, first, last = result.replaced.get(name, (0, at.min(), at.max()))
            result.replaced[name] = (count + int(changed.sum()), min(first, at.min()), max(last, at.max()))


def _import_events(meter: MeterFile, plan: _Plan, cloud: CloudStore, retry: RetryPolicy,
                   result: ImportResult, checks: Plausibility, nameplate_kw: float | None) -> None:
    """An event file (:mod:`cloud.sync.event_files`): every mapped entity's states read
    (refused rows quarantined as they come), then the grid of readings stored in batches."""
    source = f"import:{meter.path.name}"
    entity_column, state_column = plan.events
    wanted = [e for entities in plan.sources.values() for e in entities]
    events, others = ev.Events(), pd.Series(dtype="int64")
    for raw in progress(meter.chunks(plan.options.batch_size), total=meter.total_chunks, desc="read", unit="chunk"):
        ts, reasons = read_times(raw, plan)
        if plan.times.offsets is None and len(raw):
            _no_time_read(raw, plan, meter)
        entity = raw[entity_column].astype("string").str.strip()
        mine = entity.isin(wanted).fillna(False).to_numpy(dtype=bool)
        others = others.add(entity[~mine].value_counts(), fill_value=0)
        values, unreadable = ev.state_values(raw[state_column], plan.dialect.numbers)
        bad = unreadable & mine & (reasons == "").to_numpy()
        reasons[bad] = [f"state {dd.shown(v)} is not a number" for v in raw[state_column][bad]]
        refused = mine & (reasons != "").to_numpy()
        if refused.any():
            rows = refused_rows(raw, ts, reasons, refused, plan.options.device_id, meter.where)
            retry.call("quarantine", lambda rows=rows: cloud.quarantine(rows.drop(columns=s.REASON), rows[s.REASON], source))
            result.rows_quarantined += int(refused.sum())
        micros = ts.to_numpy(dtype="datetime64[us]").astype(np.int64)
        ok = mine & ~refused
        for name in entity[ok].unique():
            these = ok & entity.eq(name).to_numpy(dtype=bool, na_value=False)  # a row without an entity is none of them
            events.add(str(name), micros[these], values[these])
    absent = [e for e in wanted if e not in events.times]
    if absent:
        raise UsageError(f"{meter.path}: --column-map names {absent}, not in the file's {entity_column} "
                         f"(entities such as {sorted(others.index)[:5]})")
    result.entities_not_imported = sorted(others.index)
    _store_grid(events, plan, cloud, retry, result, checks, nameplate_kw, source)


def _store_grid(events: ev.Events, plan: _Plan, cloud: CloudStore, retry: RetryPolicy, result: ImportResult,
                checks: Plausibility, nameplate_kw: float | None, source: str) -> None:
    factor, kind = UNITS[plan.options.units or "kW"]
    states = {e: events.of(e) for entities in plan.sources.values() for e in entities}  # each entity sorted once
    grid = ev.grid_of([t for t, _ in states.values()])
    columns = {}
    for field_name, entities in plan.sources.items():
        power = field_name in _POWER_COLUMNS
        rate = sum((-1 if e in plan.options.negated else 1)
                   * (ev.total_rates(*states[e], grid) if power and kind == TOTAL else ev.held_means(*states[e], grid))
                   for e in entities)  # entities summed, as columns are
        columns[field_name] = rate * factor if power else rate
    readings = ev.readings_frame(plan.options.device_id, grid, columns)
    plan.interval = checks.interval = ev.STEP
    for start in range(0, len(readings), plan.options.batch_size):
        _store_batch(dd.coerce_frame(readings.iloc[start:start + plan.options.batch_size]), plan.fields, source, cloud,
                     retry, result, checks, nameplate_kw)


def _no_time_read(raw: pd.DataFrame, plan: _Plan, meter: MeterFile) -> None:
    """Refuse a file none of whose first rows has a time that can be read: its times are
    in a format not given, and quarantining every row of it would bury the one fix."""
    texts = time_texts(raw, plan.time_columns).astype("string").str.strip()
    sample = texts[texts.notna() & (texts != "")]
    if sample.empty:
        raise UsageError(f"{meter.path}: the time column {' + '.join(plan.time_columns)} is empty in the first "
                         f"{len(raw)} rows; expected a time on every row (--timestamp-column NAME)")
    given = ("--timestamp-format" if plan.options.timestamp_format else "the pattern its first dates show"
             if plan.format_read else "the file header's time format")
    fix = (f"times in {given} {plan.times.format!r}; check the pattern against the file" if plan.times.format
           else f"{EXPECTED}, or --timestamp-format PATTERN such as '%d.%m.%Y %H:%M'")
    raise UsageError(f"{meter.path}: no time in the first {len(raw)} rows can be read (such as "
                     f"{dd.shown(sample.iloc[0])}); expected {fix}")


def print_import(result: ImportResult, options: ImportOptions, as_json: bool = False) -> None:
    """The import's outcome, then one line per plausibility check (or all of it as JSON)."""
    zone, zone_from = (("UTC", f"the name of its time column, {result.utc_named}") if result.utc_named
                       else (options.timezone, options.zone_source))
    if as_json:
        zone = {"timezone": zone if result.wall_clock else None,  # null: the times carried their offsets
                "timezone_from": (zone_from or "--timezone") if result.wall_clock else None}
        print(json.dumps({"device_id": options.device_id, **result.as_dict(), **zone}, indent=2))
        return
    print(f"imported {result.rows_synced} readings of {options.device_id} ({result.rows_quarantined} quarantined)")
    if result.released:
        print(f"  quarantine: {result.released:,} rows an earlier import of this file refused are stored now and left "
              "the quarantine")
    if result.wall_clock and zone_from:
        hint = "" if result.utc_named else "; --timezone ZONE to change"
        print(f"  times: wall-clock times read in {zone} ({zone_from}{hint})")
    for columns, pattern in result.formats_read.items():
        order = "day/month" if pattern.index("%d") < pattern.index("%m") else "month/day"
        print(f"  times: {columns} read as {pattern!r}, {order}: a number above 12 says which (--timestamp-format "
              "to change)")
    if result.written_once:
        print(f"  times: the hour the clock repeats in autumn is written once on {', '.join(result.written_once)}: read "
              "as the clock's first pass, the second a gap (a utility that sums both passes into that row stores the "
              "hour at twice its load: compare it with the hours around it)")
    if result.moved and result.interval is not None:
        print(f"  times: {result.moved} labels each interval's start; stored at its end, {duration(result.interval)} later, "
              "as readings are (--time-label end to keep them)")
    for field_name, columns in result.mapped_by_file.items():
        print(f"  columns: {columns} as {field_name}, as the file says (--column-map to take them elsewhere)")
    for columns, unit in result.units_read.items():
        print(f"  units: {columns} in {unit}" + (" (--units W if it holds watts)" if unit.endswith(UNSAID) else ""))
    if result.columns_not_imported:
        print(f"  columns not imported (no reading field; --column-map FILE_COLUMN=field): "
              f"{dd.some(result.columns_not_imported)}")
    if result.entities_not_imported:
        print(f"  entities not imported (not in --column-map ENTITY=field): {dd.some(result.entities_not_imported)}")
    for field_name, (count, first, last) in result.replaced.items():
        print(f"  replaced: {count:,} stored values of {field_name} ({first:%Y-%m-%d %H:%M}Z to {last:%Y-%m-%d %H:%M}Z) "
              "with this file's; a field holds one value per time, so a grid meter's import and export downloaded "
              "apart are imported together, each with its --import and --column-map (docs/operations.md)")
    for field_name, (count, first, last) in result.unmatched.items():
        print(f"  joined: {count:,} time{'s' * (count != 1)} of {field_name} ({first:%Y-%m-%d %H:%M}Z to {last:%Y-%m-%d %H:%M}Z) lack a "
              "reading in one of the files summed into it: quarantined with the readings the others have, not stored "
              "as part of the sum (where one download begins later, as an export meter fitted with the PV does, "
              "import the other alone first, then both: the sums then replace its values where both have one)")
    if result.features_rewound:
        print(f"  features: already written past {result.first_stored:%Y-%m-%d %H:%M}Z; the next "
              f"run_feature_engineering.py rewrites them from there ({', '.join(result.features_rewound)})")
    for finding in result.findings:
        print(f"  {finding.line()}")


def declared_zone(cloud: CloudStore, device_id: str | None) -> str | None:
    """The time zone the device's ``sites`` row declares, None without one."""
    if not device_id:
        return None
    zone = _site_row(cloud, device_id).get("timezone")
    return None if zone is None or pd.isna(zone) or not str(zone).strip() else str(zone)


def _site_row(cloud: CloudStore, device_id: str | None) -> dict[str, Any]:
    """The device's ``sites`` row ({} without one), read once per import."""
    row = cloud.read_frame(s.SITES, {dd.DEVICE_ID: device_id}) if device_id else pd.DataFrame()
    return row.iloc[0].to_dict() if len(row) else {}


def _site_facts(site: dict[str, Any], options: ImportOptions) -> tuple[float | None, float | None, SolarConfig | None]:
    """The longitude (``--longitude``, else the site's row), PV nameplate and, without
    ``--longitude``, the PV array of the site's row that the checks use (None: no row, or it
    gives no orientation)."""
    longitude = options.longitude if options.longitude is not None else _number(site.get("longitude"))
    located = all(_number(site.get(key)) is not None for key in ("latitude", "longitude", "tilt_degrees", "azimuth_degrees"))
    array = solar_config(site) if options.longitude is None and located else None
    return longitude, _number(site.get("pv_capacity_kw")), array


def _number(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(np.float64(value))
