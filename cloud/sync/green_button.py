"""Green Button "Download My Data" XML (NAESB ESPI, an Atom feed) as a table of readings:
what utilities in North America give a home owner of their meter.

A feed holds entries linked by their Atom links: a ``UsagePoint`` (the meter), its
``MeterReading`` s, each with a ``ReadingType`` (unit ``uom``, ``powerOfTenMultiplier``,
``flowDirection``, ``accumulationBehaviour``) and ``IntervalBlock`` s of ``IntervalReading``
s (``timePeriod`` start in Unix seconds, duration in seconds, an integer ``value``). Each
reading describes the interval it ends, so it is labelled by its end, as every reading here
is, and the value becomes that interval's mean power from its own duration: energy in Wh
(``uom`` 72) over the duration, power in W (38) as it is, each times ten to its multiplier.
A reading type's column is named by its flow, ``delivered (kW)`` (to the home, 1),
``received (kW)`` (from it, 19), and its unit; one in another unit (gas in therms) is a
column in that unit, which no power field takes. Register readings
(``accumulationBehaviour`` 1 or 3, a meter's totals) are refused: the download of interval
data holds the energy of each interval.

The feed is read element by element (``iterparse``), each entry dropped once read, and the
blocks are joined to their reading types after the whole feed is read, since the order of
the entries is not fixed. A feed whose blocks' links name no meter reading is read when it
holds a single reading type. The project reads ESPI itself rather than through a Green
Button library: the one on PyPI refuses a feed holding any code its enumerations lack (an
``electricity primary metered`` commodity, 2) and builds an object per reading.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.errors import UsageError

ATOM, ESPI = "{http://www.w3.org/2005/Atom}", "{http://naesb.org/espi}"
TIME_COLUMN = "interval_end"
#: How a refused reading is located: its place among the feed's readings in time order.
WHERE = "reading"
#: Flow directions' column names: energy delivered to the home (its import), received from it.
FLOWS = {1: "delivered", 19: "received"}
#: ``uom`` codes read as power (Wh over the interval, or W), and the units of the others.
WATT_HOURS, WATTS = 72, 38
OTHER_UNITS = {5: "A", 29: "V", 31: "J", 33: "Hz", 42: "m3", 61: "VA", 63: "var", 71: "VAh", 73: "varh", 119: "ft3",
               132: "Btu", 169: "therm"}
#: ``accumulationBehaviour`` codes of a meter's running totals, which interval data is not.
REGISTERS = {1: "bulkQuantity", 3: "cumulative"}
#: The import's mapping when the command line gives none: the grid flow, import less export.
DEFAULT_MAP = {"delivered (kW)": dd.NET_GRID_FLOW, "received (kW)": f"-{dd.NET_GRID_FLOW}"}


def is_green_button(path: Path) -> bool:
    """Whether a file is an Atom feed of ESPI entries (its first 4 KiB say so)."""
    with path.open("rb") as handle:
        start = handle.read(4096)
    return b"http://naesb.org/espi" in start or (b"<feed" in start and b"http://www.w3.org/2005/Atom" in start)


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
    blocks: dict[str, list[np.ndarray]] = field(default_factory=dict)  # a block's up link -> [start, duration, value] rows


def read_feed(path: Path) -> pd.DataFrame:
    """The feed's readings: ``interval_end`` (ISO 8601, UTC) and one column per reading type,
    in kW (or its own unit), in time order; a time one type lacks is NaN in its column."""
    feed = _Feed()
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            if element.tag == f"{ATOM}entry":
                _entry(element, feed)
                element.clear()
    except ET.ParseError as error:
        raise UsageError(f"--import {path}: not readable as Green Button XML ({error}); expected an ESPI Atom feed") from None
    columns = _columns(feed, path)
    if not columns:
        raise UsageError(f"--import {path}: a Green Button feed without interval readings; expected IntervalBlock "
                         "entries (the utility's interval data download)")
    frame = pd.concat(columns, axis=1).sort_index()
    ends = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame.reset_index(drop=True).assign(**{TIME_COLUMN: ends})[[TIME_COLUMN, *frame.columns]]


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
        for block in content.iter(f"{ESPI}IntervalBlock"):
            rows = [(_integer(r, "timePeriod/start"), _integer(r, "timePeriod/duration"), _text(r, "value"))
                    for r in block.iter(f"{ESPI}IntervalReading")]
            placed = [row for row in rows if row[0] is not None and row[1] is not None]  # a time to give a reason at
            feed.blocks.setdefault(up or self_link or "", []).append(
                pd.DataFrame(placed, columns=["start", "duration", "value"]))


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


def _columns(feed: _Feed, path: Path) -> list[pd.Series]:
    grouped: dict[str, tuple[_Type, list[np.ndarray]]] = {}
    for link, tables in feed.blocks.items():
        found = _type_of(link, feed)
        if found is None:
            raise UsageError(f"--import {path}: interval block {link!r} is linked to no reading type; expected each "
                             "MeterReading to link its ReadingType and IntervalBlocks")
        type_link, kind = found
        grouped.setdefault(type_link, (kind, []))[1].extend(tables)
    columns, names = [], set()
    for type_link, (kind, tables) in grouped.items():
        if kind.accumulation in REGISTERS:
            raise UsageError(f"--import {path}: reading type {type_link!r} holds a meter's totals "
                             f"(accumulationBehaviour {kind.accumulation}, {REGISTERS[kind.accumulation]}); expected "
                             "interval data (deltaData, 4)")
        rows = pd.concat(tables, ignore_index=True)
        start, duration = rows["start"].to_numpy(dtype="int64"), rows["duration"].to_numpy(dtype="int64")
        integer = rows["value"].str.fullmatch(r"[-+]?\d+").fillna(False).to_numpy(dtype=bool)
        value = np.full(len(rows), np.nan)
        value[integer] = rows["value"][integer].astype("int64") * 10.0 ** kind.multiplier
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind.uom == WATT_HOURS:
                value, unit = np.where(duration > 0, value / 1000.0 / (duration / 3600.0), np.nan), "kW"
            elif kind.uom == WATTS:
                value, unit = value / 1000.0, "kW"
            else:
                unit = OTHER_UNITS.get(kind.uom, f"uom {kind.uom}")
        cells = pd.Series(value, dtype=object).where(integer, rows["value"])  # not a number: kept for its reason
        name = f"{FLOWS.get(kind.flow, f'flow {kind.flow}')} ({unit})"
        name = name if name not in names else f"{name} [{type_link}]"
        names.add(name)
        series = pd.Series(cells.to_numpy(), index=pd.to_datetime(start + duration, unit="s", utc=True).as_unit("us"),
                           name=name)
        columns.append(series[~series.index.duplicated(keep="first")])
    return columns
