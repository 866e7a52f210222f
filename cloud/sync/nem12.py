"""AEMO's NEM12 interval meter data (the MDFF "NEM12" CSV): what Australian distributors and
retailers give a home owner of their meter, read by ``nemreader``.

A file holds a ``200`` record per meter channel (its NMI, the NMI suffix naming the channel,
its unit and interval length) followed by ``300`` records, one per day, each with the
energy of every interval of that day; ``400`` records mark some of a day's intervals with
another quality. Times are the National Electricity Market's: Australian Eastern Standard
Time, UTC+10, all year, whatever the site's own zone does in summer (AEMO, *Meter Data File
Format Specification NEM12 & NEM13*). A day's interval ``k`` ends ``k`` intervals after its
midnight, so each reading is labelled by that end, as every reading here is.

A channel is a column named by its suffix, ``E1 (kW)``: ``E`` channels are energy the home
imports (``E1`` its general supply, ``E2`` a controlled load such as a water heater, metered
apart and paid apart), ``B`` channels energy it exports. Energy (``KWH``, ``WH``, ``MWH``)
becomes each interval's mean power; a channel in another unit (``KVARH``, reactive) keeps
its unit, which no power field takes. The file's own map is the grid flow, every ``E``
channel less every ``B`` channel; a file of several NMIs (several meters, or several homes)
names each column with its NMI too, and maps none: which is the home's is not the file's
order to decide.

A reading of quality ``N`` (null: the meter gave none) is kept as its text, so the import
quarantines it; estimated and substituted readings (``E``, ``S``, ``F``) are what the bill
is made of and are stored. A second ``300`` record of a channel's day (a correction, or a
download of several files concatenated) is weighed by its ``UpdateDateTime``: the newest
record's readings are stored and the other's, where they differ, quarantined as repeats
(an undated record counts as the older; of two records written at the same time, the
first in the file is kept).
"""

from __future__ import annotations

import csv
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.sync.interval_data import Readings, usual_intervals, wide_table
from der_core import der_data as dd
from der_core.errors import UsageError

#: NEM time: AEST, UTC+10 without daylight saving.
NEM_TIME = pd.Timedelta(hours=10)
#: Energy units, as kWh per unit.
ENERGY = {"KWH": 1.0, "WH": 0.001, "MWH": 1000.0}
NULL = "N"
#: nemreader's own log lines are not the import's: what they say that matters comes back as rows.
logging.getLogger("nemreader").propagate = False


def is_nem12(path: Path) -> bool:
    """Whether a file's first record is a NEM12 header (``100,NEM12,…``), or a ``200`` NMI
    record, which some distributors' downloads start with (no header). The specification
    lets a file come zipped, one file to the archive, as nemreader reads it."""
    try:
        raw = _content(path, 512)
    except ValueError:
        return False
    head = raw.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    cells = head.split("\n", 1)[0].strip().split(",")
    return (cells[0] == "100" and len(cells) > 1 and cells[1].strip().upper() in ("NEM12", "NEM13")) or (
        cells[0] == "200" and len(cells) >= 9)


def read_nem12(path: Path) -> Readings:
    """The file's readings: ``interval_end`` (ISO 8601, UTC) and one column per channel in
    kW (or its own unit), each column's interval, and the grid flow as the file's map."""
    from nemreader import NEMFile

    skipped = _Skipped()
    logging.getLogger("nemreader").addHandler(skipped)
    try:
        lines = _content(path).decode("utf-8-sig").splitlines()
        nem = NEMFile(str(path), strict=False)
        data = nem.parse_nem_file(lines, file_name=str(path))
    # nemreader reads a record without its channel's 200 record, or an interval length of 0,
    # as these: each a file that is no NEM12, not a defect here.
    except (ValueError, LookupError, AssertionError, AttributeError, ZeroDivisionError, TypeError, csv.Error,
            zipfile.BadZipFile) as error:
        raise UsageError(f"--import {path}: not readable as NEM12 ({' '.join(str(error).split())}); expected AEMO's "
                         "NEM12 interval data (100, 200, 300, 400 and 900 records)") from None
    finally:
        logging.getLogger("nemreader").removeHandler(skipped)
    if nem.header is not None and nem.header.version_header == "NEM13":
        raise UsageError(f"--import {path}: a NEM13 file holds a meter's register reads, not its intervals; expected "
                         "NEM12 interval data (ask the distributor for the interval data download)")
    several = len(data.readings) > 1
    updated = _update_times(lines)
    frames, names, known = [], [], {}
    for nmi, channels in data.readings.items():
        for suffix, reads in channels.items():
            if not reads:
                continue
            unit = str(reads[0].uom).upper()
            name = f"{nmi + ' ' if several else ''}{suffix} ({'kW' if unit in ENERGY else unit})"
            frames.append(_channel(name, reads, ENERGY.get(unit), updated.get((nmi, suffix), [])))
            names.append(name)
            if not several and unit in ENERGY and suffix[:1].upper() in "EB":
                known[name] = dd.NET_GRID_FLOW if suffix[:1].upper() == "E" else f"-{dd.NET_GRID_FLOW}"
    if skipped.days:  # a day's record nemreader could not read: quarantined without a time, with what it said
        names = names or ["E1 (kW)"]
        none = pd.array([None] * len(skipped.days), dtype="Int64")
        frames.append(pd.DataFrame({"name": names[0], "end": none, "duration": none, "cell": skipped.days}))
    if not frames:
        raise UsageError(f"--import {path}: a NEM12 file without interval data; expected 300 records after a 200 record")
    readings = pd.concat(frames, ignore_index=True)
    return Readings(wide_table(readings, names), usual_intervals(readings), known)


def _content(path: Path, size: int = -1) -> bytes:
    """The file's bytes (its first ``size``), or those of the one file a zip archive holds;
    ValueError for an archive of none or several."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            if len(members) != 1:
                raise ValueError(f"a zip archive of {len(members)} files, where NEM12 allows one")
            with archive.open(members[0]) as handle:
                return handle.read(size)
    with path.open("rb") as handle:
        return handle.read(size)


def _update_times(lines: list[str]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """Per channel (NMI, suffix), each ``300`` record nemreader reads, in file order, as its
    count of readings and its ``UpdateDateTime`` in Unix seconds of NEM time (NaN where it
    gives none): nemreader reads the field but does not pass it on, and a channel's
    readings come from its records in that order. A record too short for its channel is
    passed over here as nemreader passes it over."""
    times: dict[tuple[str, str], list[tuple[int, float]]] = {}
    channel, count = None, 0
    for row in csv.reader(lines):
        kind = row[0].strip() if row else ""
        if kind == "200" and len(row) > 8 and row[8].strip().isdigit() and int(row[8]) > 0:
            channel, count = (row[1], row[4]), 1440 // int(row[8])
        elif kind == "300" and channel is not None and len(row) >= count + 2:
            stamp = row[count + 5].strip() if len(row) > count + 5 else ""
            written = pd.to_datetime(stamp, format="%Y%m%d%H%M%S", errors="coerce") if len(stamp) == 14 else pd.NaT
            times.setdefault(channel, []).append((count, np.nan if written is pd.NaT else written.timestamp()))
    return times


class _Skipped(logging.Handler):
    """The day records nemreader leaves out (too few intervals for the channel's length),
    each as the line it logs: a day of readings is never dropped unsaid."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.days: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Skipping"):
            self.days.append(message)


def _channel(name: str, reads: list, kwh_per_unit: float | None, records: list[tuple[int, float]]) -> pd.DataFrame:
    """One channel's readings as :mod:`cloud.sync.interval_data` takes them: ``end`` in Unix
    seconds (NEM time read as UTC+10), ``duration``, ``cell`` (kW for energy, else the
    value in its unit; the text ``N`` for a null reading, none for a blank one) and
    ``updated``, its record's update time (NaN for all where the records do not account for
    every reading, as no file nemreader reads should make them)."""
    end = pd.DatetimeIndex([r.t_end for r in reads])
    start = pd.DatetimeIndex([r.t_start for r in reads])
    seconds = (end - NEM_TIME).as_unit("s").asi8  # NEM time's wall clock, as the UTC instant it is
    duration = (end - start).total_seconds().to_numpy()
    value = np.array([np.nan if r.read_value is None else r.read_value for r in reads], dtype="float64")
    if kwh_per_unit is not None:
        value = value * kwh_per_unit / (duration / 3600.0)
    null = np.array([(r.quality_method or "")[:1].upper() == NULL for r in reads])
    cells = pd.Series(value, dtype=object).where(~null, NULL)
    counts = np.array([count for count, _ in records], dtype="int64")
    written = np.repeat(np.array([time for _, time in records], dtype="float64"), counts) \
        if counts.sum() == len(reads) else np.full(len(reads), np.nan)
    return pd.DataFrame({"name": name, "end": pd.array(seconds, dtype="Int64"),
                         "duration": pd.array(duration.astype("int64"), dtype="Int64"), "cell": cells,
                         "updated": written})
