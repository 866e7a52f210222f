"""The SunSpec register map: where the points this gateway reads live, and what their raw
values mean. Pure functions over register lists; the Modbus client is in ``modbus_sunspec.py``.

Offsets are from a model's first register (its ``ID``), as in the SunSpec model definitions
(``json/model_<id>.json`` of the SunSpec models repository): ``ID`` and ``L`` first, then the
points in order. A map starts with the marker ``SunS`` and chains models (``ID``, ``L``, then
``L`` registers) until the ID ``0xFFFF``.

A point whose raw value is its type's "not implemented" pattern (int16 ``0x8000``, uint16 and
enum16 ``0xFFFF``, acc32 ``0``, sunssf ``0x8000``) is missing, never a number; so is a point
whose scale factor is missing or outside the specification's -10..10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MARKER = (0x5375, 0x6E53)  # "SunS"
END_ID = 0xFFFF
#: Where a SunSpec map may start (the specification's three base addresses, most common first).
BASE_ADDRESSES = (40000, 0, 50000)
#: The most registers one Modbus read returns (Modbus application protocol, function 3).
MAX_READ = 125

COMMON = 1
INVERTERS = (101, 102, 103)  # single, split and three phase: one layout
DER_AC = 701
STORAGE = 124
BATTERY = 802
METERS = (201, 202, 203, 204)  # single, split, three-phase wye and delta: one layout


@dataclass(frozen=True)
class Point:
    name: str
    offset: int
    kind: str  # int16, uint16, enum16, bitfield16, acc32, sunssf
    sf: str | None = None


def _points(*points: Point) -> dict[str, Point]:
    return {p.name: p for p in points}


# Only the points this gateway reads or writes, with their scale factors.
_INVERTER = _points(Point("W", 14, "int16", "W_SF"), Point("W_SF", 15, "sunssf"),
                    Point("DCW", 31, "int16", "DCW_SF"), Point("DCW_SF", 32, "sunssf"))
_DER_AC = _points(Point("W", 10, "int16", "W_SF"), Point("W_SF", 116, "sunssf"))
_STORAGE = _points(
    Point("WChaMax", 2, "uint16", "WChaMax_SF"), Point("StorCtl_Mod", 5, "bitfield16"),
    Point("MinRsvPct", 7, "uint16", "MinRsvPct_SF"), Point("ChaState", 8, "uint16", "ChaState_SF"),
    Point("OutWRte", 12, "int16", "InOutWRte_SF"), Point("InWRte", 13, "int16", "InOutWRte_SF"),
    Point("InOutWRte_WinTms", 14, "uint16"), Point("InOutWRte_RvrtTms", 15, "uint16"),
    Point("WChaMax_SF", 18, "sunssf"), Point("MinRsvPct_SF", 21, "sunssf"), Point("ChaState_SF", 22, "sunssf"),
    Point("InOutWRte_SF", 25, "sunssf"),
)
_BATTERY = _points(Point("SoC", 11, "uint16", "SoC_SF"), Point("W", 47, "int16", "W_SF"),
                   Point("SoC_SF", 56, "sunssf"), Point("W_SF", 63, "sunssf"))
_METER = _points(Point("W", 18, "int16", "W_SF"), Point("WphA", 19, "int16", "W_SF"), Point("WphB", 20, "int16", "W_SF"),
                 Point("WphC", 21, "int16", "W_SF"), Point("W_SF", 22, "sunssf"))

#: Per model id, the points read from it.
POINTS: dict[int, dict[str, Point]] = {
    **{m: _INVERTER for m in INVERTERS}, DER_AC: _DER_AC, STORAGE: _STORAGE, BATTERY: _BATTERY,
    **{m: _METER for m in METERS},
}

_MISSING = {"int16": 0x8000, "sunssf": 0x8000, "uint16": 0xFFFF, "enum16": 0xFFFF, "bitfield16": 0xFFFF}


@dataclass(frozen=True)
class Model:
    """One model of a device's map: its id, the address of its ``ID`` register and its length ``L``."""

    id: int
    address: int
    length: int

    def span(self) -> tuple[int, int]:
        """(first address, count) of one read holding every point this gateway uses in the
        model, so each value and its scale factor come from the same instant."""
        offsets = [p.offset for p in POINTS[self.id].values()]
        first, last = min(offsets), max(offsets)
        return self.address + first, last - first + 1


def is_marker(registers: Sequence[int]) -> bool:
    return tuple(registers[:2]) == MARKER


def raw(registers: Sequence[int], model: Model, name: str, first: int) -> int | None:
    """The raw value of point ``name`` from ``registers`` read from address ``first``, or None
    when it is not implemented."""
    point = POINTS[model.id][name]
    index = model.address + point.offset - first
    value = registers[index]
    if point.kind == "acc32":
        value = (value << 16) | registers[index + 1]
        return None if value == 0 else value
    if value == _MISSING.get(point.kind):
        return None
    if point.kind in ("int16", "sunssf") and value >= 0x8000:
        value -= 0x10000
    return value


def scaled(registers: Sequence[int], model: Model, name: str, first: int) -> float:
    """Point ``name`` times 10 to its scale factor, both from the same ``registers``; NaN when
    either is not implemented or the scale factor lies outside -10..10."""
    point = POINTS[model.id][name]
    value = raw(registers, model, name, first)
    sf = 0 if point.sf is None else raw(registers, model, point.sf, first)
    if value is None or sf is None or not -10 <= sf <= 10:
        return math.nan
    return value * 10.0**sf


def steps(value: float, sf: int) -> int:
    """``value`` in whole steps of 10 to the scale factor ``sf``, as a register holds it."""
    return round(value / 10.0**sf)


def encoded(value: float, sf: int, kind: str) -> int:
    """The register holding ``value`` at scale factor ``sf`` (rounded; two's complement for int16)."""
    number = steps(value, sf)
    if kind == "int16":
        number = max(-0x7FFF, min(0x7FFF, number))
        return number & 0xFFFF
    return max(0, min(0xFFFE, number))
