"""A meter file's header: which of its first rows names the columns, and what the rows
around it say of them.

Inverter tools and portals write more than one header line. SMA's Sunny Explorer format
(also written by SBFspot) puts a ``Version CSV1|…`` line, device rows, the channels' names,
a ``Counter``/``Analog`` row and a units row whose time cell is the time format
(``dd.MM.yyyy HH:mm:ss;kWh;kW``) above the first reading; other exports put a units row
(``[dd.MM.yyyy HH:mm];[Wh]``) under the names. From the file's first rows:

- A **units row** is the first row whose every filled cell is a unit (``kW``, ``[Wh]``,
  ``%``…, or any short one in brackets, ``[Ah]``) or a time format as .NET and Java write
  them (``dd.MM.yyyy HH:mm``), with at least one unit known here. The readings start below
  it.
- The **names row** is then the nearest row above it that is not a ``Counter``/``Analog``
  row (SMA's: a ``Counter`` channel is a running total, an ``Analog`` one a value per
  reading).
- Without a units row the names row is the first row of two names or more, none a value,
  in which a time column is found (by name, or ``--timestamp-column``) or one cell is a
  time format (SBFspot's spot files name their time column by its format), so a preamble
  above it is passed over; else the first.

A column without a name takes its units cell (SMA's time column has none); a name that
repeats is told apart by the first header row that tells its columns apart (SMA's serial
numbers, one inverter's channels from another's), else as pandas does (``name.1``). A
column's unit then says whether it holds power, energy per reading or a running total, and
the time format how its times read, where the command line does not say. Without a units
row, a units column right of a column (``USAGE,UNITS``, as utilities' downloads write it;
where that column holds no number, the first after it that does) gives that column the unit
in its first reading, a unit in a title block above the names (``Unite`` over ``W``) gives
it to every column of numbers, else a unit closing the column's name
(``PV (W)``) says as much of power. Energy (``Wh``) outside SMA's kinds row cannot tell a
reading's energy from a running total, so the command line must.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud.sync.timestamps import find_time_columns, normal_name
from der_core.errors import UsageError

#: Units a units row may hold, brackets and spaces aside.
_UNIT = re.compile(r"^[\[(]?\s*(?:[mkKM]?(?:W|w|Wh|WH|wh|VA|VAh|var|varh)|Watt|V|A|mA|%|°C|°F|Hz|W/m²|W/m2)\s*[\])]?$")
#: A bracketed cell of a units row that is no unit known here (``[Ah]``, ``[-]``, ``[kWp]``).
#: A line break inside a quoted header cell (``"PV power\n(W)"``): read as the space it shows.
_LINE_BREAK = re.compile(r"[ \t]*\r?\n[ \t]*")
_OTHER_UNIT = re.compile(r"^\[[^\[\]]{0,12}\]$")
#: A time format as .NET and Java spell it: day, month and year fields and separators.
_TIME_FORMAT = re.compile(r"^[\[(]?\s*(?=[^\])]*y)(?=[^\])]*M)(?=[^\])]*d)[yMdHhmsftaT.:/\- ,']+\s*[\])]?$")
_FORMAT_FIELDS = re.compile(r"yyyy|yy|MMMM|MMM|MM|M|dddd|ddd|dd|d|HH|H|hh|h|mm|m|ss|s|fff|ff|f|tt|a|T|'[^']*'")
_STRFTIME = {"yyyy": "%Y", "yy": "%y", "MMMM": "%B", "MMM": "%b", "MM": "%m", "M": "%m", "dddd": "%A", "ddd": "%a",
             "dd": "%d", "d": "%d", "HH": "%H", "H": "%H", "hh": "%I", "h": "%I", "mm": "%M", "m": "%M", "ss": "%S",
             "s": "%S", "fff": "%f", "ff": "%f", "f": "%f", "tt": "%p", "a": "%p", "T": "T"}
#: A cell that is a reading's value (a number, a date or a time), which no names row holds.
_VALUE = re.compile(r"^[-+]?\d[\d.,:/\- T]*$")
#: A cell that is a number (a decimal comma or thousands separators allowed), not a time.
_NUMBER = re.compile(r"^[-+]?\d[\d.,' ]*$")
#: SMA's channel kinds: a ``Counter`` is a meter's running total, an ``Analog`` a reading's value.
_KINDS = {"counter", "analog"}
#: The import units a file's own unit stands for.
_POWER_UNITS = {"w": "W", "watt": "W", "kw": "kW", "wh": "Wh", "kwh": "kWh"}
#: Units a units column may name beside power and energy: other commodities' (gas, water).
_OTHER_UNITS = frozenset({"therm", "therms", "ccf", "mcf", "m3", "m³", "ft3", "cf", "gal", "l", "btu", "kbtu", "mmbtu",
                          "kvah", "kvarh", "kvar", "kva", "a", "v"})
#: Names of a column that holds the unit of the column before it, in each row.
UNIT_COLUMN_NAMES = frozenset({"unit", "units", "uom", "unit_of_measure", "einheit", "unite", "unidad", "unita",
                               "eenheid"})
#: A unit closing a column's name: ``PV (W)``, ``Energy Produced [Wh]``.
_NAME_UNIT = re.compile(r"[\[(]\s*(k?w|k?wh)\s*[\])]\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Unit:
    """What a file says of a column's unit, and where it says it."""

    name: str  # W, kW, Wh, kWh, or a unit that is no power or energy as written (%, V)
    total: bool | None  # energy: a running total (True), a reading's (False), or not said (None)
    where: str  # "the file's header" or "its name"

    @property
    def known(self) -> bool:
        return self.name in ("W", "kW", "Wh", "kWh")

    @property
    def import_unit(self) -> str | None:
        """The import unit (``kW``, ``Wh-total``…), None for energy the file does not say
        is a reading's or a running total."""
        if self.name in ("W", "kW"):
            return self.name
        return None if self.total is None else f"{self.name}-total" if self.total else self.name


@dataclass(frozen=True)
class Header:
    """Where a file's names are and what its header rows say of its columns."""

    columns: list[str]
    names_row: int = 0  # among the rows read (after a ``sep=`` line)
    data_row: int = 1  # the first row below the header
    units: dict[str, str] = field(default_factory=dict)  # column -> its units cell, unbracketed
    kinds: dict[str, str] = field(default_factory=dict)  # column -> "counter" or "analog"
    written: dict[str, str] = field(default_factory=dict)  # a renamed column -> its name as written
    time_column: str | None = None  # the column whose units (or names) cell is a time format
    time_format: str | None = None  # that format as a strftime pattern
    unit_columns: dict[str, str] = field(default_factory=dict)  # column -> the units column beside it

    def unit_of(self, column: str) -> Unit | None:
        """The unit the units row (or a units column), else the column's name, gives a column."""
        cell = self.units.get(column)
        if cell is not None:
            kind = self.kinds.get(column)
            beside = self.unit_columns.get(column)
            return Unit(_POWER_UNITS.get(cell.lower(), cell), None if kind is None else kind == "counter",
                        "the file's header" if beside is None else f"its {beside} column")
        match = _NAME_UNIT.search(self.written.get(column, column))
        return None if match is None else Unit(_POWER_UNITS[match.group(1).lower()], None, "its name")


def find_header(rows: Sequence[Sequence[str]], timestamp_column: str | None) -> Header:
    """The header of a file whose first rows (cells as text) are ``rows`` (see the module
    docstring)."""
    cells = [[_LINE_BREAK.sub(" ", str(c)).strip() for c in row] for row in rows]
    units_at = next((i for i, row in enumerate(cells) if _is_units_row(row)), None)
    names_at = None
    if units_at:  # a units row with rows above it
        names_at = units_at - 1
        while names_at > 0 and _is_kind_row(cells[names_at]):
            names_at -= 1
    if names_at is None or not any(cells[names_at]) or _is_kind_row(cells[names_at]):
        return _names_by_time(cells, timestamp_column)
    width = max(len(cells[names_at]), len(cells[units_at]))
    unit_cells = _padded(cells[units_at], width)
    columns, written = _unique(_padded(cells[names_at], width), cells[:names_at], unit_cells)
    kind_rows = [r for r in cells[names_at + 1:units_at] if _is_kind_row(r)]
    kinds = {c: k.lower() for c, k in zip(columns, _padded(kind_rows[0], width), strict=True) if k} if kind_rows else {}
    units, time_column, time_format = {}, None, None
    for column, unit in zip(columns, unit_cells, strict=True):
        if _TIME_FORMAT.match(unit) and time_column is None:
            time_column, time_format = column, strftime_of(unit)
        elif unit:
            units[column] = _unbracketed(unit)
    return Header(columns, names_at, units_at + 1, units, kinds, written, time_column, time_format)


def _names_by_time(cells: list[list[str]], timestamp_column: str | None) -> Header:
    """A header without a units row: the first row that names a time column, else the first."""
    names_at = next((i for i, row in enumerate(cells) if _names_time(row, timestamp_column)), 0)
    names = cells[names_at] if cells else []
    below = [row for row in cells[names_at + 1:] if any(row)]
    if below and len({len(row) for row in below}) == 1 and len(below[0]) > len(names):
        names = _padded(names, len(below[0]))  # every reading holds cells the names leave unnamed: columns of their own
    columns, written = _unique(names, cells[:names_at], [""] * len(names))
    unit_columns = _unit_columns(columns, written, cells[names_at + 1:])
    units = {column: _first_cell(cells[names_at + 1:], columns.index(beside)) for column, beside in unit_columns.items()}
    if (whole := _preamble_unit(cells[:names_at])) is not None:
        units = {c: whole for k, c in enumerate(columns) if _NUMBER.match(_first_cell(cells[names_at + 1:], k))} | units
    header = Header(columns, names_at, names_at + 1, units=units, written=written, unit_columns=unit_columns)
    time_at = next((k for k, c in enumerate(names) if _TIME_FORMAT.match(c)), None)
    if time_at is None:
        return header
    return dataclasses.replace(header, time_column=columns[time_at], time_format=strftime_of(names[time_at]))


def _unit_columns(columns: list[str], written: dict[str, str], rows: list[list[str]]) -> dict[str, str]:
    """Each column a units column describes -> that units column: one named as
    :data:`UNIT_COLUMN_NAMES` (``UNITS.1`` too, a repeated one) whose first filled cell is a
    unit. It describes the column before it (utilities' downloads write ``USAGE,UNITS`` with
    ``kWh`` in every row), or, where that holds no number, the first column after it that
    does: Enedis' load curve writes ``…;Etape métier;Unité;Horodate;Valeur`` with ``W``. A
    ``Unit`` column of other things (``Inverter 1``) is no units column."""
    found = {}
    for k, name in enumerate(columns):
        if normal_name(written.get(name, name)) not in UNIT_COLUMN_NAMES or not _is_unit(_first_cell(rows, k)):
            continue
        after = _numbers_after(rows, k, len(columns))
        if k > 0 and (_NUMBER.match(_first_cell(rows, k - 1)) or not after):
            found[columns[k - 1]] = name
        elif after:
            found[columns[after[0]]] = name
    return found


def _numbers_after(rows: list[list[str]], k: int, named: int) -> list[int]:
    """The named columns (of ``named``) right of column ``k`` whose first filled cell is a
    number; a row's cells beyond the names belong to no column."""
    width = min(max((len(row) for row in rows), default=0), named)
    return [j for j in range(k + 1, width) if _NUMBER.match(_first_cell(rows, j))]


def _preamble_unit(above: list[list[str]]) -> str | None:
    """The unit a title block above the names gives the whole file: a cell named as
    :data:`UNIT_COLUMN_NAMES` with a unit under it (Enedis' older load curve starts
    ``…;Unite;Pas en minutes`` over ``…;W;``, then ``Horodate;Valeur``) or beside it
    (``Unit;kWh``)."""
    for i, row in enumerate(above):
        for k, cell in enumerate(row):
            if normal_name(cell) not in UNIT_COLUMN_NAMES:
                continue
            for candidate in (above[i + 1][k] if i + 1 < len(above) and k < len(above[i + 1]) else "",
                              row[k + 1] if k + 1 < len(row) else ""):
                if _UNIT.match(candidate):
                    return _unbracketed(candidate)
    return None


def _is_unit(cell: str) -> bool:
    return bool(_UNIT.match(cell)) or cell.lower() in _OTHER_UNITS


def _first_cell(rows: list[list[str]], k: int) -> str:
    """Column ``k``'s cell in the first row that has one, unbracketed."""
    return next((_unbracketed(row[k]) for row in rows if len(row) > k and row[k]), "")


def strftime_of(pattern: str) -> str:
    """A .NET/Java time format (``dd.MM.yyyy HH:mm:ss``, brackets aside) as a strftime pattern."""
    def field_of(match: re.Match) -> str:
        token = match.group(0)
        return token[1:-1].replace("%", "%%") if token.startswith("'") else _STRFTIME[token]
    return _FORMAT_FIELDS.sub(field_of, _unbracketed(pattern).replace("%", "%%"))


def _is_units_row(row: list[str]) -> bool:
    filled = [c for c in row if c]
    return (len(filled) >= 2 and all(_UNIT.match(c) or _TIME_FORMAT.match(c) or _OTHER_UNIT.match(c) for c in filled)
            and any(_UNIT.match(c) for c in filled))


def _is_kind_row(row: list[str]) -> bool:
    filled = [c.lower() for c in row if c]
    return bool(filled) and all(c in _KINDS for c in filled)


def _names_time(row: list[str], timestamp_column: str | None) -> bool:
    """Whether a row can be the names row: two names or more, none a reading's value, one
    of them a time column's (or a time format)."""
    filled = [c for c in row if c]
    if len(filled) < 2 or any(_VALUE.match(c) for c in filled):
        return False
    if timestamp_column is None and any(_TIME_FORMAT.match(c) for c in filled):
        return True
    try:
        find_time_columns(row, timestamp_column, "", index=False)
    except UsageError:
        return False
    return True


def _unbracketed(cell: str) -> str:
    return cell.strip().strip("[]()").strip()


def _padded(row: Sequence[str], width: int) -> list[str]:
    return list(row[:width]) + [""] * (width - len(row))


def unique_names(names: list[str]) -> list[str]:
    """A table's column names made unique as a header's are (``name.1`` for a repeat,
    ``column N`` for an empty one): a column is mapped by its name, so no two may share one."""
    return _unique(names, [], [""] * len(names))[0]


def _unique(names: list[str], above: list[list[str]], unit_cells: list[str]) -> tuple[list[str], dict[str, str]]:
    """The names made unique, and each renamed column's name as written. An empty name
    takes its units cell (else ``column N``). A repeated name is followed by the first row
    above that tells its columns apart (SMA's serial numbers); without one the first keeps
    it and the others are ``name.1``, ``name.2``…, as pandas names them."""
    filled = [n or _unbracketed(u) or f"column {k + 1}" for k, (n, u) in enumerate(zip(names, unit_cells, strict=True))]
    out = list(filled)
    positions: dict[str, list[int]] = {}
    for k, name in enumerate(filled):  # in one pass: a row may hold hundreds of thousands of cells
        positions.setdefault(name, []).append(k)
    for name, where in positions.items():
        if len(where) == 1:
            continue
        apart = next((row for row in above if len({_cell(row, k) for k in where}) == len(where)
                      and all(_cell(row, k) for k in where)), None)
        for rank, k in enumerate(where):
            out[k] = f"{name} ({_cell(apart, k)})" if apart else name if rank == 0 else f"{name}.{rank}"
    taken: set[str] = set()
    for k, name in enumerate(out):  # a qualified name may be another column's own
        candidate, extra = name, 0
        while candidate in taken:
            extra += 1
            candidate = f"{name}.{extra}"
        out[k] = candidate
        taken.add(candidate)
    return out, {new: old for new, old in zip(out, names, strict=True) if new != old}


def _cell(row: Sequence[str], k: int) -> str:
    return row[k] if k < len(row) else ""
