"""A logger's timestamps as UTC instants, row by row: a row whose time cannot be placed gets
a reason instead of refusing the file.

Times carrying an offset (``Z``, ``+01:00``; the offset may change at DST) are exact, and
so are Unix times (10 digits of seconds, optionally with a fraction, or 13 of milliseconds
since 1970-01-01T00:00Z, what databases and monitoring exports write). A spreadsheet's date
serial (five digits of days, the time of day their fraction or a clock beside them) is a
wall-clock time.
Times without one are wall-clock times in the given zone: the hour the clock repeats in
autumn is resolved from the file's own order (a logger writes the repeated hour's readings
first for the summer occurrence, then for the winter one: a step back in wall time inside
that hour moves to the second occurrence), and a time the clock skips in spring is
refused, because no correct logger can write it and shifting it would invent a reading.
A day's end written as ``24:00`` (ISO 8601 allows it; meter operators' files of interval
ends use it) is the next day's ``00:00``. A file is one kind or the other, decided by its
first readable time; a row of the other kind is refused rather than guessed. Pure
functions over Series, state carried between the chunks of a long file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.errors import UsageError

#: Time column names loggers and exports use, compared case-insensitively with runs of
#: punctuation and spaces read as ``_`` ("Date/Time" is ``date_time``), first match wins;
#: the German, French, Spanish, Italian and Dutch ones that European portals export last.
TIMESTAMP_NAMES = (
    dd.TS, dd.TIMESTAMP, "timestamp_utc", "datetime", "date_time", "time", "time_utc", "utc", "utc_time",
    "local_time", "time_local", "localtime", "period_end", "period_start", "interval_end", "interval_start",
    "end_time", "start_time", "reading_time", "measured_at", "measured_on", "recorded_at", "time_stamp", "last_changed",
    "last_updated", "date_time_utc", "datetime_utc", "statistical_period", "date",
    "zeitstempel", "datum_uhrzeit", "datum_zeit", "zeit", "datum", "horodatage", "horodate", "date_heure", "fecha_hora",
    "fecha", "data_ora", "tijdstip", "datum_tijd", "end", "start",
)
#: Time column names that label each reading by the start of its interval, where the
#: product's readings are labelled by its end.
START_NAMES = frozenset({"period_start", "interval_start", "start_time", "start", "time_start", "start_utc",
                         "start_local", "from", "von", "beginn", "debut", "inicio"})
#: The first column's name where a table's index was written as its first column, without
#: a name (pandas' ``to_csv`` of a frame indexed by time; ``column 1`` as the header reader
#: names an empty cell, ``Unnamed: 0`` as pandas reads it back): taken as the time where no
#: column has a time's name.
_INDEX_NAMES = frozenset({"", "column_1", "unnamed_0", "index"})
#: A date column and a time-of-day column that together hold the time, in the same languages.
DATE_AND_TIME = (("date", "time"), ("datum", "uhrzeit"), ("datum", "zeit"), ("date", "heure"), ("fecha", "hora"),
                 ("data", "ora"), ("datum", "tijd"))
#: A date and the time of day each interval starts, as utilities' interval downloads write
#: them (Green Button CSV: ``DATE,START TIME,END TIME,USAGE (kWh)``, whose end is the
#: interval's last minute, ``00:14`` for ``00:00`` to ``00:15``, so the start is the exact one;
#: German suppliers' ``Datum;Von;Bis``): read where no column holds a whole time.
DATE_AND_START = (("date", "start_time"), ("start_date", "start_time"), ("date", "start"), ("datum", "von"),
                  ("datum", "beginn"), ("date", "debut"), ("fecha", "inicio"))
#: Names that hold a date or a time of day alone, not a whole time.
_PARTS = frozenset({n for pair in DATE_AND_TIME + DATE_AND_START for n in pair}
                   | {"end_time", "end", "bis", "fin", "ende", "end_date"})
#: A time column's name that says its times are UTC (``timestamp_utc``, Shelly's ``Date/time
#: UTC``), not an offset from it (``Time (UTC+1)``): such times are read in UTC whatever zone
#: the site declares, as a logger that labels its clock so keeps no local one.
_NAMES_UTC = re.compile(r"(?<![a-z0-9])utc(?![a-z0-9]|\s*[+-]\s*\d)", re.IGNORECASE)
_HAS_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}")
_UNIX = re.compile(r"\d{10}(?:\.\d+)?|\d{13}")
#: A spreadsheet's date serial, days since Excel's day 0 with the time of day as their
#: fraction (``45476.4166666667`` is 2024-07-03 10:00): what a date cell formatted as a number
#: holds, and what Excel writes to CSV for one; or a whole day's serial and the time of day
#: from a column beside it (``45476`` and ``10:00``). Five digits are the years 1927 to 2173.
_SERIAL = re.compile(r"(?P<days>\d{5}(?:\.\d+)?)(?:\s+(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?)?")
#: Excel's day 0 in its 1900 date system: 1899-12-30, as its serials count past the 29th of
#: February 1900 that Lotus 1-2-3 counted and the calendar lacks.
_SERIAL_EPOCH = pd.Timestamp("1899-12-30")
#: The end of a day written as ``24:00`` (ISO 8601 allows it; meter operators' interval-end
#: files use it): the next day's ``00:00``.
_DAY_END = re.compile(r"(?<![\d:])24:00(?=$|[^\d:.]|:00(?![\d.]))")
_OFFSET = re.compile(r"\d\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|[+-]\d\d(?::?\d\d)?)$", re.IGNORECASE)


#: What a time without ``--timestamp-format`` may look like.
EXPECTED = "ISO 8601 (2024-03-31T02:15:00, optionally +01:00) or Unix seconds"
#: A date of numbers, day and month in either order before the year (``01/06/2012 05:45``,
#: ``6/1/2012 5:45 PM``, ``01.06.2012 05:45:00``), as portals and spreadsheets write them.
_NUMERIC_DATE = re.compile(r"(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)\d{4}"
                           r"(?:(?P<gap>[ T]+)\d{1,2}:\d{2}(?P<seconds>:\d{2})?(?P<ampm>(?P<before>\s*)[AaPp][Mm])?)?")
#: The share of a file's first times that must be numeric dates for their order to be read.
NUMERIC_DATE_SHARE = 0.9


def normal_name(name: object) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def find_time_columns(columns: Sequence[object], given: str | None, source: str, index: bool = True) -> tuple[str, ...]:
    """The column(s) holding the time: ``given`` (exact, else case-insensitive), else the
    recognised date and time-of-day columns read together, else the first recognised name,
    unless that holds a date or a time of day alone and a date and an interval's start time
    can be read together (:data:`DATE_AND_START`), else, with ``index``, a first column
    without a name (:data:`_INDEX_NAMES`; not when looking for the names row, which a row of
    units with an empty first cell would then pass for)."""
    names = {normal_name(c): c for c in reversed(list(columns))}
    if given is not None:
        found = given if given in columns else names.get(normal_name(given))
        if found is None:
            raise UsageError(f"{source}: --timestamp-column {given!r} not found; columns: {[str(c) for c in columns]}")
        return (found,)
    if not any(n in names for n in TIMESTAMP_NAMES[:5]):
        for date, time in DATE_AND_TIME:
            if date in names and time in names:
                return names[date], names[time]
    single = next((names[c] for c in TIMESTAMP_NAMES if c in names), None)
    if single is None or normal_name(single) in _PARTS:  # no column holds a whole time
        for date, start in DATE_AND_START:
            if date in names and start in names:
                return names[date], names[start]
    if single is not None:
        return (single,)
    if index and columns and normal_name(columns[0]) in _INDEX_NAMES:
        return (columns[0],)
    raise UsageError(f"{source}: no timestamp column; expected one named like {', '.join(TIMESTAMP_NAMES[:9])}, ... "
                     f"(any case) or --timestamp-column NAME; columns: {[str(c) for c in columns]}")


def names_a_time(column: object) -> bool:
    """Whether a column's name is one of a time, a date or a time of day (the ``Start`` beside
    the ``End`` read, a Green Button ``END TIME``): no reading, nor a column left out of one."""
    name = normal_name(column)
    return name in TIMESTAMP_NAMES or name in _PARTS or name in START_NAMES


def names_utc(columns: Sequence[object]) -> bool:
    """Whether the time column's name (or a date's or time of day's beside it) says UTC."""
    return any(_NAMES_UTC.search(str(c)) for c in columns)


#: A column named by a time of day or an interval of one (``00:00 - 00:30``, ``23:30``).
_CLOCK_NAME = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?(?:\s*[-–]\s*\d{1,2}:\d{2}(?::\d{2})?)?")
#: As many such columns as the hours of a day: a day per row, an interval per column.
WIDE_DAY_COLUMNS = 24


def wide_day(columns: Sequence[object]) -> list[str]:
    """The columns named by times of day where a file writes a day per row and each interval
    of it in its own column (Australian distributors' interval downloads: ``NMI,…,DATE,
    00:00 - 00:30,…,23:30 - 00:00``); empty for a file of a reading per row."""
    clocks = [str(c) for c in columns if _CLOCK_NAME.fullmatch(str(c).strip())]
    return clocks if len(clocks) >= WIDE_DAY_COLUMNS else []


def labels_start(columns: Sequence[object]) -> bool:
    """Whether the time column's name (the time of day's, beside a date) says it labels each
    interval by its start."""
    return normal_name(columns[-1]) in START_NAMES


def time_texts(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """One time value per row: the column itself, or a date and a time column joined (the
    time column alone in a row where it holds a date as well)."""
    if len(columns) == 1:
        values = frame[columns[0]]
        if isinstance(values, pd.DataFrame):  # two columns of the same name
            raise UsageError(f"more than one timestamp column {columns[0]!r}; expected one")
        return values
    date, time = (frame[c].astype("string").str.strip() for c in columns)
    whole = time.str.contains(_HAS_DATE).fillna(False).astype(bool)  # a "Start" that holds the date too
    return (date + " " + time).where(~whole, time)


def numeric_date_format(texts: pd.Series, source: str, later: Iterable[pd.Series] = ()) -> str | None:
    """The strftime pattern of times written as numeric dates (:data:`_NUMERIC_DATE`),
    read from the file's first times, or None where they are not such dates (ISO 8601, Unix
    times, a sheet's date cells). Which of the two numbers before the year is the day is
    what their values say: one above 12 is a day; a date with dots is day first (no one
    writes the month first with them). Where the first times leave it open (a minute logger's
    first week of a month), the times of ``later`` (the rest of the file, read chunk by
    chunk) are looked through until one settles it. Times that leave it open to the end of
    the file are refused in one line naming both patterns: a guess would store a year of
    readings on the wrong days."""
    if pd.api.types.is_datetime64_any_dtype(texts):
        return None
    texts = texts.astype("string").str.strip()
    texts = texts[texts.notna() & (texts != "")]
    if texts.empty:
        return None
    parts = texts.str.extract(f"^{_NUMERIC_DATE.pattern}$")
    matched = parts["a"].notna()
    if matched.mean() < NUMERIC_DATE_SHARE:
        return None
    parts = parts[matched]
    first, second = parts["a"].astype(int), parts["b"].astype(int)
    sep = str(parts["sep"].iloc[0])
    clock = ""
    if texts[matched].str.contains(":", regex=False).iloc[0]:
        ampm = parts["ampm"].notna().iloc[0]
        seconds = ":%S" if parts["seconds"].notna().iloc[0] else ""
        meridiem = f"{parts['before'].iloc[0]}%p" if ampm else ""  # "5:45 PM", and "5:45PM" as Excel may write it
        clock = f"{parts['gap'].iloc[0]}{'%I' if ampm else '%H'}:%M{seconds}{meridiem}"
    day_first, month_first = (first > 12).any() or sep == ".", (second > 12).any()
    for more in later if not (day_first or month_first) else ():
        numbers = more.astype("string").str.strip().str.extract(f"^{_NUMERIC_DATE.pattern}$")[["a", "b"]].dropna()
        day_first, month_first = (numbers["a"].astype(int) > 12).any(), (numbers["b"].astype(int) > 12).any()
        if day_first or month_first:
            break
    if day_first and month_first:
        return None
    if day_first or month_first:
        order = ("%d", "%m") if day_first else ("%m", "%d")
        return f"{order[0]}{sep}{order[1]}{sep}%Y{clock}"
    both = [f"'%{x}{sep}%{y}{sep}%Y{clock}'" for x, y in (("d", "m"), ("m", "d"))]
    raise UsageError(f"{source}: times such as {dd.shown(texts.iloc[0])} may be day/month or month/day, and no "
                     f"number above 12 says which; expected --timestamp-format {both[0]} or {both[1]}")


#: Wall-clock times a zone's rules can place: a day inside the calendar Python's clock holds.
CALENDAR_WALL = (pd.Timestamp("0001-01-02"), pd.Timestamp("9999-12-30"))


@dataclass
class TimeReader:
    """Reads one file's times chunk by chunk (:meth:`read`); keeps what a chunk boundary
    would otherwise lose: whether the file's times carry offsets, and where in a repeated
    autumn hour the previous chunk ended."""

    zone: str = "UTC"
    format: str | None = None  # a strftime pattern; None: ISO 8601
    offsets: bool | None = None
    _last_repeated: tuple[int, bool] | None = None  # (wall time in ns, second occurrence)
    _passes: dict[int, bool] = field(default_factory=dict)  # day (ns // day) of a repeated hour read -> a second pass seen

    def written_once(self) -> list[str]:
        """The days (``YYYY-MM-DD``) whose repeated autumn hour the file wrote once: read as the
        clock's first pass, the second a gap. Whether the utility summed both passes into
        those rows the file cannot say, so the import says where to look."""
        day_ns = 86_400 * 10**9
        return [pd.Timestamp(day * day_ns).strftime("%Y-%m-%d") for day, twice in sorted(self._passes.items()) if not twice]

    def read(self, values: pd.Series) -> tuple[pd.Series, pd.Series]:
        """``(UTC instants, reasons)`` aligned with ``values``; NaT and a reason where a
        row's time cannot be placed, an empty reason elsewhere."""
        reasons = pd.Series("", index=values.index, dtype=object)
        if pd.api.types.is_datetime64_any_dtype(values):
            aware = pd.Series(values.dt.tz is not None, index=values.index)
            parsed = values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
        else:
            texts = values.astype("string").str.strip()
            unix = texts.str.fullmatch(_UNIX).fillna(False).astype(bool) & (self.format is None)
            serial = texts.str.fullmatch(_SERIAL).fillna(False).astype(bool) & (self.format is None)
            aware = texts.str.contains(_OFFSET).fillna(False).astype(bool) | unix
            day_end = texts.str.contains("24:00", regex=False).fillna(False).astype(bool)  # cheap, then exact
            cleaned = texts
            if day_end.any():
                day_end[day_end] = texts[day_end].str.contains(_DAY_END).fillna(False).astype(bool)
                cleaned = texts.where(~day_end, texts.str.replace(_DAY_END, "00:00", n=1, regex=True))
            try:
                # in µs, as the times written into it below are (a column of no ISO time parses in s)
                parsed = pd.to_datetime(cleaned.where(~unix & ~serial), format=self.format or "ISO8601", utc=True,
                                        errors="coerce").dt.as_unit("us")
            except (ValueError, re.error) as error:
                raise UsageError(f"time format {self.format!r} cannot be read ({' '.join(str(error).split())}); "
                                 "expected a strftime pattern such as '%d.%m.%Y %H:%M'") from None
            if self.format is not None and values.dtype == object:  # a sheet's date cells carry their own type
                typed = values.map(lambda v: isinstance(v, datetime)).astype(bool)
                if typed.any():
                    parsed[typed] = pd.to_datetime(list(values[typed]), utc=True)
            parsed[day_end] += pd.Timedelta(days=1)
            if unix.any():
                seconds = pd.to_numeric(texts[unix]) / np.where(texts[unix].str.len() == 13, 1000, 1)
                parsed[unix] = pd.to_datetime(np.round(seconds.to_numpy() * 1e6), unit="us", utc=True)
            if serial.any():  # wall-clock times, to the second (a serial's last digits are float noise)
                parts = texts[serial].str.extract(f"^{_SERIAL.pattern}$").astype(float)
                clock = parts[["h", "m", "s"]].fillna(0).to_numpy() @ np.array([3600, 60, 1])
                wall = _SERIAL_EPOCH + pd.to_timedelta(np.round(parts["days"].to_numpy() * 86_400) + clock, unit="s")
                parsed[serial] = pd.DatetimeIndex(wall).tz_localize("UTC").as_unit("us")
            unread = parsed.isna() & texts.notna() & (texts != "")
            expected = f"format {self.format!r}" if self.format else EXPECTED
            reasons[unread] = [f"timestamp {dd.shown(t)} is not a time; expected {expected}" for t in texts[unread]]
        readable = parsed.notna()
        reasons[~readable & (reasons == "")] = "timestamp is empty; expected a time on every row"
        if self.offsets is None and readable.any():
            self.offsets = bool(aware[readable].iloc[0])
        if self.offsets is not None:
            other = readable & (aware != self.offsets)
            reasons[other] = ("timestamp has no offset while the file's times carry one" if self.offsets
                              else f"timestamp carries an offset while the file's times have none (read in {self.zone})")
        placed = readable & (reasons == "")
        if not self.offsets and placed.any():
            local, why = self._localize(parsed[placed].dt.tz_localize(None))
            parsed = parsed.where(~placed, local)
            reasons[why.index[why != ""]] = why[why != ""]
        parsed = parsed.where(reasons == "")
        return parsed.astype("datetime64[us, UTC]"), reasons

    def _localize(self, wall: pd.Series) -> tuple[pd.Series, pd.Series]:
        """Wall-clock times in the zone as UTC, and the reason for each one that cannot be.
        A time within a day of the calendar's ends (a placeholder such as 9999-12-31 23:15)
        has no zone rules to place it by: Python's clock stops at year 9999."""
        reasons = pd.Series("", index=wall.index, dtype=object)
        edge = (wall < CALENDAR_WALL[0]) | (wall > CALENDAR_WALL[1])
        if edge.any():
            reasons[edge] = [f"local time {t} lies within a day of the calendar's end, where no zone's rules place it; "
                             "expected a reading's time" for t in wall[edge]]
            wall = wall.where(~edge, CALENDAR_WALL[0])  # placed, then dropped with its reason
        probe = wall.dt.tz_localize(self.zone, ambiguous="NaT", nonexistent="NaT")
        if probe.notna().all():
            return probe.dt.tz_convert("UTC").where(~edge), reasons
        # a time the clock skips is unplaced too, but no pass of a repeated hour
        skips = wall.dt.tz_localize(self.zone, ambiguous=np.ones(len(wall), dtype=bool), nonexistent="NaT").isna()
        summer_first = self._first_occurrences(wall, probe.isna() & ~skips)
        local = wall.dt.tz_localize(self.zone, ambiguous=summer_first, nonexistent="NaT")
        skipped = local.isna()
        reasons[skipped] = [f"local time {t} does not exist in {self.zone} (the clock skips it at DST); "
                            "expected a time the clock shows" for t in wall[skipped]]
        return local.dt.tz_convert("UTC").where(~edge), reasons

    def _first_occurrences(self, wall: pd.Series, unplaced: pd.Series) -> np.ndarray:
        """For each row, True where it is read as the summer (first) occurrence of a repeated
        hour: until the wall time steps back within the same day's repeated hour."""
        first = np.ones(len(wall), dtype=bool)
        nanos = wall.to_numpy().astype("datetime64[ns]").astype(np.int64)
        day_ns = 86_400 * 10**9
        last = self._last_repeated
        for position in np.flatnonzero(unplaced.to_numpy()):
            now = int(nanos[position])
            second = last is not None and last[0] // day_ns == now // day_ns and (last[1] or now <= last[0])
            first[position] = not second
            self._passes[now // day_ns] = self._passes.get(now // day_ns, False) or second
            last = (now, second)
        self._last_repeated = last
        return first
