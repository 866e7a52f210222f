"""Green Button "Download My Data" XML (NAESB ESPI, an Atom feed) as a table of readings:
what utilities in North America give a home owner of their meter.

A feed holds entries linked by their Atom links: a ``UsagePoint`` (the meter), its
``MeterReading`` s, each with a ``ReadingType`` (unit ``uom``, ``powerOfTenMultiplier``,
``flowDirection``, ``accumulationBehaviour``) and ``IntervalBlock`` s of ``IntervalReading``
s (``timePeriod`` start in Unix seconds, duration in seconds, a ``value``). Each reading
describes the interval it ends, so it is labelled by its end, as every reading here is, and
the value becomes that interval's mean power from its own duration: energy in Wh (``uom``
72) over the duration, power in W (38) as it is, each times ten to its multiplier. ESPI
writes whole numbers, but a decimal one (``250.0``) is the same energy, so any number is
read; a value that is none is kept as its text, for the import to quarantine with it.

A reading type's column is named by its flow, ``delivered (kW)`` (to the home, 1, and a
type that names no flow: ESPI's consumption), ``received (kW)`` (from it, 19), ``net (kW)``
(4, the grid flow itself, so taken alone where a feed has it), and its unit; one in another
unit (gas in therms) is a column in that unit, which no power field takes. Where two
reading types would share a name (two meters in one download), every one of them is named
with its ``ReadingType`` link as well: which meter is the home's is not the feed's order to
decide, so the file's map takes none of them and the import asks for ``--column-map``.
Register readings (``accumulationBehaviour`` 1 or 3, a meter's totals) are left out beside
interval data, which holds the energy of each interval; a feed of registers alone is refused.

No reading is dropped unsaid. A reading that cannot be placed in time (no ``timePeriod``
start, a duration not above 0, seconds beyond 64 bits) is a row without a time, after the
timed ones. A second reading of an interval (a utility's correction in another block) that
differs is a row of its own right after the kept one, with the same time, so the import
quarantines it as a repeat: the kept one is from the entry updated last (its Atom
``updated``), else the first in the feed. A repeat of the same value says nothing new and
is left out.

The grid flow the file's map makes is a row-by-row sum of its columns, so they must read
the same intervals: where their usual durations differ (delivered in quarter hours,
received in hours) the map is refused when the import uses it, naming each interval, and a
``--column-map`` of one of them imports it.

The feed is read element by element (``iterparse``), each entry dropped once read, and the
blocks are joined to their reading types after the whole feed is read, since the order of
the entries is not fixed. A feed whose blocks' links name no meter reading is read when it
holds a single reading type. The project reads ESPI itself rather than through a Green
Button library: the one on PyPI refuses a feed holding any code its enumerations lack (an
``electricity primary metered`` commodity, 2) and builds an object per reading.
"""

from __future__ import annotations

import codecs
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cloud.sync.interval_data import Readings, usual_intervals, wide_table
from der_core import der_data as dd
from der_core.errors import UsageError

ATOM, ESPI = "{http://www.w3.org/2005/Atom}", "{http://naesb.org/espi}"
#: Flow directions' column names: energy delivered to the home (its import), received from
#: it, and the two netted; a type naming no flow is the home's consumption, delivered.
FLOWS = {None: "delivered", 1: "delivered", 4: "net", 19: "received"}
#: ``uom`` codes read as power (Wh over the interval, or W), and the units of the others.
WATT_HOURS, WATTS = 72, 38
OTHER_UNITS = {5: "A", 29: "V", 31: "J", 33: "Hz", 42: "m3", 61: "VA", 63: "var", 71: "VAh", 73: "varh", 119: "ft3",
               132: "Btu", 169: "therm"}
#: ``accumulationBehaviour`` codes of a meter's running totals, which interval data is not.
REGISTERS = {1: "bulkQuantity", 3: "cumulative"}
#: The import's mapping when the command line gives none: the grid flow, import less export;
#: a feed's net readings where it has them, which beside import and export would count twice.
DEFAULT_MAP = {"delivered (kW)": dd.NET_GRID_FLOW, "received (kW)": f"-{dd.NET_GRID_FLOW}"}
NET_MAP = {"net (kW)": dd.NET_GRID_FLOW}
#: The Unix seconds a reading's start, duration and end may be: what 64 bits hold (the least
#: such number is numpy's "no time"); beyond them no clock places a reading.
SECONDS = (-(2**63) + 1, 2**63 - 1)


def is_green_button(path: Path) -> bool:
    """Whether a file is an Atom feed of ESPI entries: XML (its first character, after a
    byte-order mark and blanks, opens a tag, a declaration or a comment) whose first 4 KiB
    name the Atom or ESPI namespace. A CSV may mention the namespace in a note, but does not
    start as XML."""
    with path.open("rb") as handle:
        start = handle.read(4096)
    encoding = next((e for bom, e in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
                     if start.startswith(bom)), "utf-8")
    text = start.decode(encoding, errors="ignore").lstrip("\ufeff \t\r\n")
    return text.startswith("<") and ("http://naesb.org/espi" in text or "http://www.w3.org/2005/Atom" in text)


@dataclass
class _Type:
    uom: int | None = None
    multiplier: int = 0
    flow: int | None = None
    accumulation: int | None = None


@dataclass
class _Feed:
    types: dict[str, _Type] = field(default_factory=dict)  # a ReadingType's self link -> it
    readings: dict[str, set[str]] = field(default_factory=dict)  # a MeterReading's self link -> its related links
    # a block's up link -> its readings as (end or None, duration or None, value text or None,
    # its entry's update time in Unix seconds or NaN)
    blocks: dict[str, list[tuple[int | None, int | None, str | None, float]]] = field(default_factory=dict)


def read_feed(path: Path) -> Readings:
    """The feed's readings as a table, ``interval_end`` (ISO 8601, UTC) and one column per
    reading type in kW (or its own unit), in time order (a time one type lacks is NaN in its
    column, the readings without a time last); with each column's usual duration."""
    feed = _Feed()
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            if element.tag == f"{ATOM}entry":
                _entry(element, feed)
                element.clear()
    except (ET.ParseError, LookupError) as error:  # LookupError: an encoding no codec knows
        raise UsageError(f"--import {path}: not readable as Green Button XML ({error}); expected an ESPI Atom feed") from None
    columns = _columns(feed, path)
    if not columns:
        raise UsageError(f"--import {path}: a Green Button feed without interval readings; expected IntervalBlock "
                         "entries (the utility's interval data download)")
    readings = pd.concat(columns, ignore_index=True)
    if readings["end"].isna().all():
        raise UsageError(f"--import {path}: no interval reading has a time; expected each IntervalReading's timePeriod "
                         "to hold its start (Unix seconds) and a duration above 0")
    table = wide_table(readings, [c["name"].iloc[0] for c in columns])
    known = NET_MAP if set(NET_MAP) <= set(table.columns) else DEFAULT_MAP
    return Readings(table, usual_intervals(readings), {c: f for c, f in known.items() if c in table.columns})


def _entry(entry: ET.Element, feed: _Feed) -> None:
    links = {(link.get("rel"), link.get("href")) for link in entry.iter(f"{ATOM}link")}
    self_link = next((href for rel, href in links if rel == "self"), None)
    up = next((href for rel, href in links if rel == "up"), None)
    content = entry.find(f"{ATOM}content")
    if content is None:
        return
    if (kind := content.find(f"{ESPI}ReadingType")) is not None:
        feed.types[self_link or f"#{len(feed.types)}"] = _Type(
            _integer(kind, "uom"), _integer(kind, "powerOfTenMultiplier") or 0, _integer(kind, "flowDirection"),
            _integer(kind, "accumulationBehaviour"))
    elif content.find(f"{ESPI}MeterReading") is not None:
        feed.readings[self_link or f"#{len(feed.readings)}"] = {href for rel, href in links if rel == "related"}
    else:
        updated = pd.to_datetime(entry.findtext(f"{ATOM}updated", ""), utc=True, errors="coerce")
        seconds = np.nan if updated is pd.NaT else updated.timestamp()
        for block in content.iter(f"{ESPI}IntervalBlock"):
            feed.blocks.setdefault(up or self_link or "", []).extend(
                (*_reading(r), seconds) for r in block.iter(f"{ESPI}IntervalReading"))


def _reading(reading: ET.Element) -> tuple[int | None, int | None, str | None]:
    """A reading's end and duration, both None where it cannot be placed, and its value."""
    start, duration = _integer(reading, "timePeriod/start"), _integer(reading, "timePeriod/duration")
    value = _text(reading, "value")
    if start is None or duration is None or duration <= 0:
        return None, None, value
    low, high = SECONDS
    if not (low <= start <= high and duration <= high and low <= start + duration <= high):
        return None, None, value
    return start + duration, duration, value


def _text(element: ET.Element, path: str) -> str | None:
    found = element.find("/".join(f"{ESPI}{step}" for step in path.split("/")))
    return None if found is None or found.text is None else found.text.strip()


def _integer(element: ET.Element, path: str) -> int | None:
    text = _text(element, path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _type_of(block_link: str, feed: _Feed) -> tuple[str, _Type] | None:
    """A block's reading type: the one its meter reading links to (the block's ``up`` link
    is among the meter reading's related links), else the feed's only one."""
    for related in feed.readings.values():
        if block_link in related or any(block_link.startswith(r) for r in related if r.endswith("IntervalBlock")):
            found = next(((link, feed.types[link]) for link in related if link in feed.types), None)
            if found is not None:
                return found
    return next(iter(feed.types.items())) if len(feed.types) == 1 else None


def _columns(feed: _Feed, path: Path) -> list[pd.DataFrame]:
    """Each reading type's readings, in file order: ``name`` (its column), ``end`` (Unix
    seconds, NA where it cannot be placed), ``duration``, ``cell`` (its value in the
    column's unit, or its text where that is no number) and ``updated`` (its entry's)."""
    grouped: dict[str, tuple[_Type, list[tuple[int | None, int | None, str | None, float]]]] = {}
    for link, rows in feed.blocks.items():
        found = _type_of(link, feed)
        if found is None:
            raise UsageError(f"--import {path}: interval block {link!r} is linked to no reading type; expected each "
                             "MeterReading to link its ReadingType and IntervalBlocks")
        type_link, kind = found
        grouped.setdefault(type_link, (kind, []))[1].extend(rows)
    grouped = {link: (kind, rows) for link, (kind, rows) in grouped.items() if rows}
    registers = [(link, kind) for link, (kind, _) in grouped.items() if kind.accumulation in REGISTERS]
    if registers and len(registers) == len(grouped):
        link, kind = registers[0]
        raise UsageError(f"--import {path}: reading type {link!r} holds a meter's totals (accumulationBehaviour "
                         f"{kind.accumulation}, {REGISTERS[kind.accumulation]}); expected interval data (deltaData, 4)")
    grouped = {link: found for link, found in grouped.items() if found[0].accumulation not in REGISTERS}
    names = {link: f"{FLOWS.get(kind.flow, f'flow {kind.flow}')} ({_unit(kind)})" for link, (kind, _) in grouped.items()}
    shared = {n for n in names.values() if list(names.values()).count(n) > 1}
    columns = []
    for link, (kind, rows) in grouped.items():
        end, duration, text, updated = zip(*rows)
        frame = pd.DataFrame({"end": pd.array(end, dtype="Int64"), "duration": pd.array(duration, dtype="Int64"),
                              "updated": np.array(updated, dtype="float64")})
        name = names[link] if names[link] not in shared else f"{names[link]} [{link}]"
        columns.append(frame.assign(name=name, cell=_cells(pd.Series(text, dtype=object), frame, kind)))
    return columns


def _unit(kind: _Type) -> str:
    return "kW" if kind.uom in (WATT_HOURS, WATTS) else OTHER_UNITS.get(kind.uom, f"uom {kind.uom}")


def _cells(text: pd.Series, frame: pd.DataFrame, kind: _Type) -> pd.Series:
    """The readings' values in their column's unit: times ten to the multiplier, energy in
    Wh over each reading's duration as kW, power in W as kW. A value that is no number,
    and that of a reading without a time (no duration to divide by), keep their text."""
    number = pd.to_numeric(text, errors="coerce").astype("float64").to_numpy()
    hours = frame["duration"].to_numpy(dtype="float64", na_value=np.nan) / 3600.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scale = np.float64(10.0) ** min(abs(kind.multiplier), 400)  # beyond 10^308 is infinite either way
        value = number * scale if kind.multiplier >= 0 else number / scale
        if kind.uom == WATT_HOURS:
            value = value / 1000.0 / hours
        elif kind.uom == WATTS:
            value = value / 1000.0
    read = ~np.isnan(number) & frame["end"].notna().to_numpy()
    return pd.Series(value, dtype=object).where(read, text)
