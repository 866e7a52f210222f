"""Meter files (CSV, Excel, Parquet) read in chunks of bounded size, each row labelled with
where it sits in the file (a CSV line, counting the header, an Excel sheet row, or a Parquet
row), so that a refused row can be found again; a utility's interval download, Green Button
XML (:mod:`cloud.sync.green_button`) or AEMO's NEM12 (:mod:`cloud.sync.nem12`), as the table
of its readings (:mod:`cloud.sync.interval_data`), each labelled by its place. An Excel
workbook is read from its first sheet. Which row names the columns, and what rows around it say of them (units, a time
format, a preamble above), :mod:`cloud.sync.file_headers` tells.

A CSV file's dialect is read from the file, because loggers and spreadsheets write what
their locale says: Excel's ``sep=;`` first line names the delimiter; otherwise it is the
one of ``,`` ``;`` tab ``|`` that splits the first 40 lines into the same number of cells,
else the later half of them (the readings below a preamble); the most cells on a tie, ``,``
when none does. A file delimited by anything but ``,`` whose number cells use a decimal comma
(``553,5``) is read with ``,`` as its decimal mark and ``.`` or a space as its thousands
separator, as German, French or Italian exports write them; in a file of decimal points, a
quoted ``"1,234.5"`` (a sheet's thousands separators, saved as CSV by Excel) is 1234.5. A
byte-order mark is dropped; UTF-16's (Sunny Explorer writes it) reads the file as UTF-16, and
a file whose start is not UTF-8 is read as Windows-1252, as Excel saves "CSV" on Western
European Windows.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pandas as pd

from cloud.sync import green_button, interval_data, nem12
from cloud.sync.file_headers import Header, find_header, unique_names
from der_core import der_data as dd
from der_core.errors import UsageError
from der_core.files import input_problem

_CSV = (".csv", ".txt", ".gz")
_PARQUET = (".parquet", ".pq")
_EXCEL = (".xlsx", ".xlsm")
SHEET_ROW = "sheet row"
_DELIMITERS = (",", ";", "\t", "|")
#: Lines (or sheet rows) read to tell a file's dialect and header: enough for a portal's
#: header block and a run of readings below it.
_SNIFF_LINES = 40
#: pandas' note of a line it leaves out for holding more cells than the columns read.
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): expected \d+ fields, saw (\d+)")
#: How the columns of cells beyond the header's names begin (:func:`beyond`).
BEYOND = "cell beyond the names "
#: The most of a row's cells beyond its names that are read as cells: enough to show what
#: spilled over (a decimal comma, a logger's extra fields); a line of thousands more (a cut
#: or pasted file) is left out by pandas and quarantined by its count, where a column for
#: each cell would take minutes to read.
MOST_BEYOND = 16
#: What a damaged or misnamed file raises while it is read, each a file that cannot be read
#: rather than a defect: bytes that do not decompress (zlib, gzip, a cut stream, a zip
#: member's checksum), markup that does not parse (XML's and lxml's errors are
#: SyntaxErrors), an encoding no codec knows or a workbook without a sheet (LookupError),
#: text no parser takes.
UNREADABLE = (ValueError, OSError, EOFError, LookupError, SyntaxError, csv.Error, zipfile.BadZipFile, zlib.error)
# openpyxl's notes on a workbook (a date cell whose serial number no date has, which reads
# as an error value the import quarantines with its row; parts it does not read) are not the
# import's to print: what matters of them comes back as rows or as a refusal.
warnings.filterwarnings("ignore", category=UserWarning, module=r"openpyxl\.")
_EXCEL_SEPARATOR = re.compile(r"^sep=(.)\s*$")
#: What groups thousands beside a decimal comma: ``.`` (German, Italian), a space, or the
#: no-break and narrow no-break spaces French Excel writes (``1 234,5``).
_GROUP = "[. \u00a0\u202f]"
#: A sign: ``-``, or the minus sign (U+2212) Windows writes for negative numbers under
#: Swedish, Norwegian and Finnish regional settings, Excel's CSV with them.
_SIGN = "[-+\u2212]"
_MINUS = "\u2212"
_DECIMAL_COMMA = re.compile(rf"^\s*{_SIGN}?\d{{1,3}}(?:{_GROUP}\d{{3}})*,\d+\s*$|^\s*{_SIGN}?\d+,\d+\s*$")
_THOUSANDS_DOT = re.compile(rf"^\s*{_SIGN}?\d{{1,3}}(?:{_GROUP}\d{{3}})+(?:,\d*)?\s*$")
_THOUSANDS_COMMA = re.compile(rf"^\s*{_SIGN}?\d{{1,3}}(?:,\d{{3}})+(?:\.\d*)?\s*$")


@dataclass(frozen=True)
class Dialect:
    """How a CSV file is written: its delimiter, the lines before its names line (Excel's
    ``sep=`` line, a preamble), the header's lines from its names line down, its decimal
    mark and its encoding."""

    delimiter: str = ","
    skip: int = 0
    decimal: str = "."
    header_lines: int = 1
    encoding: str = "utf-8-sig"
    #: Line breaks inside the header's quoted cells: lines the header takes beyond its rows,
    #: so each reading's line number is the one an editor shows.
    broken_lines: int = 0
    #: The most cells a row of readings holds among the first lines read.
    widest: int = 0

    PLAIN: ClassVar[Dialect]  # comma-separated, decimal points: pandas' own

    def numbers(self, cells: pd.Series) -> pd.Series:
        """The cells as numbers, NaN where one is not: with a decimal comma, ``1.234,5`` and
        ``1 234,5`` are 1234.5 and ``553,5`` is 553.5. With a decimal point, a quoted
        ``"1,234.5"`` (a spreadsheet's number format with thousands separators, saved as CSV)
        is 1234.5, unless the same cells hold a decimal comma (``"0,5"``): then ``"1,500"``
        may be 1.5, and is no number rather than a thousand times one. A minus sign
        (``−1.2``) is a ``-``."""
        if pd.api.types.is_numeric_dtype(cells):
            return pd.to_numeric(cells, errors="coerce")
        text = cells.astype("string")
        if text.str.contains(_MINUS, regex=False).any():
            cells = text.str.replace(_MINUS, "-", regex=False).astype(object)
            text = cells.astype("string")
        if self.decimal == ",":
            grouped = text.str.match(_THOUSANDS_DOT).fillna(False).astype(bool)
            text = text.where(~grouped, text.str.replace(rf"(?<=\d){_GROUP}(?=\d{{3}})", "", regex=True))
            return pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
        if not text.str.contains(",", regex=False).any():
            return pd.to_numeric(cells, errors="coerce")
        grouped = text.str.match(_THOUSANDS_COMMA).fillna(False).astype(bool)
        if grouped.any() and not (text.str.match(_DECIMAL_COMMA).fillna(False).astype(bool) & ~grouped).any():
            text = text.where(~grouped, text.str.replace(",", "", regex=False))
        return pd.to_numeric(text, errors="coerce")


Dialect.PLAIN = Dialect()


@dataclass(frozen=True)
class MeterFile:
    path: Path
    columns: list[str]
    where: str  # "line" (CSV, the header's line counted), "row" (Parquet, from 1) or "sheet row" (Excel)
    total_chunks: int | None  # for progress; None when unknown without reading the file
    dialect: Dialect = Dialect.PLAIN
    header: Header | None = None  # what a CSV or Excel file's header rows say; None for Parquet
    table: pd.DataFrame | None = None  # an interval download's readings, read whole (cloud.sync.interval_data)
    default_map: dict[str, str] | None = None  # the column map when the command line gives none
    default_map_refused: str | None = None  # why that map cannot be used, where it cannot

    def chunks(self, size: int) -> Iterator[pd.DataFrame]:
        """The file's rows ``size`` at a time, indexed by line (or row) number; CSV cells as
        text, so a value that is not a number is refused by its row alone. A line without a
        filled cell holds no reading and is left out, its number kept for the lines after it."""
        first = (self.dialect.skip + self.dialect.header_lines + self.dialect.broken_lines + 1 if self.where == "line"
                 else 1)
        try:
            if self.where == SHEET_ROW:
                yield from _sheet_chunks(self.path, self.columns, size, self.header.data_row + 1)
                return
            if self.table is not None:
                for start in range(0, len(self.table), size):
                    yield self.table.iloc[start:start + size].set_axis(pd.RangeIndex(start + 1, start + 1 + min(
                        size, len(self.table) - start)))
                return
            if self.where == "row":
                import pyarrow.parquet as pq

                for batch in pq.ParquetFile(self.path).iter_batches(batch_size=size):
                    chunk = batch.to_pandas().set_axis(self.columns, axis=1).set_axis(
                        pd.RangeIndex(first, first + batch.num_rows))
                    first += len(chunk)
                    if len(chunk):
                        yield chunk
                return
            yield from self._csv_chunks(size, first)
        except UNREADABLE as error:
            raise UsageError(f"--import {self.path}: cannot read near {self.where} {first} "
                             f"({' '.join(str(error).split())})") from None

    def _csv_chunks(self, size: int, first: int) -> Iterator[pd.DataFrame]:
        """A CSV file's rows, numbered by line. A row of more cells than the header names
        keeps them in columns :func:`beyond` names, so the import refuses it: which column
        each of its cells belongs to can no longer be told (a decimal comma in a
        comma-separated file, a logger's extra field). A row up to as wide as the widest of
        the first lines read keeps its cells; pandas leaves out a wider one, naming its line,
        and it stands as a row holding only its count of cells."""
        named = len(self.columns)
        extra = min(max(self.dialect.widest - named, 1), MOST_BEYOND)
        names = self.columns + [beyond(k) for k in range(1, extra + 1)]
        reader = _read_csv(self.path, self.dialect, skiprows=self.dialect.skip + self.dialect.header_lines,
                           header=None, names=names, index_col=False, dtype=str, chunksize=size,
                           skip_blank_lines=False, on_bad_lines="warn")  # blank lines kept to count lines, then left out
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    chunk = next(reader, None)
                except UNREADABLE as error:
                    raise UsageError(f"--import {self.path}: cannot read near line {first} "
                                     f"({' '.join(str(error).split())})") from None
            said = [str(w.message) for w in caught if issubclass(w.category, pd.errors.ParserWarning)]
            if any(m.startswith("Length of header") for m in said):  # the first reading, wider than all read
                raise UsageError(f"--import {self.path}: the row at line {first} holds more than {named + extra} cells "
                                 f"where its header names {named}; expected one cell per column")
            wide = {int(m.group(1)): f"({m.group(2)} cells, not read)"  # one note may name many lines
                    for message in said for m in _SKIPPED_LINE.finditer(message)}
            rows = 0 if chunk is None else len(chunk)
            lines = [n for n in range(first, first + rows + len(wide)) if n not in wide]
            if chunk is not None:
                chunk.index = pd.Index(lines[:rows])
            if wide:
                shown = pd.DataFrame({names[named]: list(wide.values())}, index=list(wide), columns=names, dtype=object)
                chunk = shown if chunk is None else pd.concat([chunk, shown]).sort_index()
            if chunk is None:
                return
            first += rows + len(wide)
            chunk = chunk.dropna(how="all")
            if len(chunk):
                yield chunk


def beyond(k: int) -> str:
    """The column of a row's ``k`` th cell beyond its header's names."""
    return f"{BEYOND}{k}"


def check_meter_path(path: str | Path) -> None:
    """A meter file to import must be a regular file: a folder, a device or a pipe is refused
    by name before anything is opened (``der_core.files``)."""
    problem = input_problem(path)
    if problem == "not found":
        raise UsageError(f"--import {path}: file not found")
    if problem is not None:
        raise UsageError(f"--import {dd.shown(str(path), 200)}: {problem}; expected a meter file")


def open_meter_file(path: Path, chunk_size: int, timestamp_column: str | None = None) -> MeterFile:
    """The file's columns and size, read from its header rows (CSV, Excel) or metadata
    (Parquet); ``timestamp_column`` (``--timestamp-column``) helps find the names row."""
    check_meter_path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".xml" or (suffix not in _PARQUET + _EXCEL and green_button.is_green_button(path)):
            return _interval_file(path, green_button.read_feed(path), chunk_size)
        if suffix not in _PARQUET + _EXCEL and nem12.is_nem12(path):
            return _interval_file(path, nem12.read_nem12(path), chunk_size)
        if suffix not in _CSV + _PARQUET + _EXCEL:
            raise UsageError(f"--import {path}: expected a .csv (or .csv.gz), .xlsx, .parquet or Green Button .xml file")
        if suffix in _EXCEL:
            header, rows = _sheet_header(path, timestamp_column)
            left = None if rows is None else max(rows - header.data_row, 1)
            return MeterFile(path, header.columns, SHEET_ROW, None if left is None else -(-left // chunk_size),
                             header=header)
        if suffix in _PARQUET:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            return MeterFile(path, unique_names([str(n) for n in meta.schema_arrow.names]), "row",
                             -(-meta.metadata.num_rows // chunk_size))
        encoding = _encoding(path)
        dialect, header = sniff(_head(path, encoding), timestamp_column)
        dialect = replace(dialect, encoding=encoding)
        lines = None if suffix == ".gz" else max(_count_lines(path) - dialect.skip - dialect.header_lines + 1, 1)
        return MeterFile(path, header.columns, "line", None if lines is None else -(-lines // chunk_size), dialect,
                         header)
    except UNREADABLE as error:
        raise UsageError(f"--import {path}: cannot read ({' '.join(str(error).split()) or type(error).__name__})") from None


def _interval_file(path: Path, readings: interval_data.Readings, chunk_size: int) -> MeterFile:
    """A utility's interval download, read whole into its table (each column named
    ``channel (unit)``), with the map its format gives."""
    columns = list(readings.table.columns)
    units = {c: re.search(r"\(([^)]*)\)", c).group(1) for c in columns[1:]}
    return MeterFile(path, columns, interval_data.WHERE, -(-len(readings.table) // chunk_size),
                     header=Header(columns, units=units), table=readings.table,
                     default_map=readings.default_map(), default_map_refused=readings.default_map_refused(path))


def _sheet_header(path: Path, timestamp_column: str | None) -> tuple[Header, int | None]:
    """An Excel workbook's first sheet: its header, read from its first rows (empty cells
    after a row's last one left out), and its row count, when the file records it."""
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        if not book.worksheets:
            raise UsageError(f"--import {path}: a workbook without a sheet; expected the readings on its first sheet")
        sheet = book.worksheets[0]
        rows = []
        for row in sheet.iter_rows(max_row=_SNIFF_LINES, values_only=True):
            cells = list(row)
            while cells and cells[-1] is None:
                cells.pop()
            rows.append(["" if c is None else str(c) for c in cells])
        return find_header(rows, timestamp_column), sheet.max_row
    finally:
        book.close()


def _sheet_chunks(path: Path, columns: list[str], size: int, first: int) -> Iterator[pd.DataFrame]:
    """The first sheet's rows from row ``first`` (below the header), ``size`` at a time,
    indexed by their row number in the sheet; rows with no cell filled (a sheet's formatted
    tail) are left out.
    Cells keep Excel's types: a date cell is a time without a zone, a number a number."""
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = book.worksheets[0].iter_rows(min_row=first, values_only=True)
        number, width = first, len(columns)
        while batch := list(itertools.islice(rows, size)):
            padded = ((number + k, tuple(row[:width]) + (None,) * (width - len(row))) for k, row in enumerate(batch))
            filled = [(n, cells) for n, cells in padded if any(c is not None for c in cells)]
            number += len(batch)
            if filled:
                index, cells = zip(*filled)
                yield pd.DataFrame(cells, columns=columns, index=pd.Index(index), dtype=object)
    finally:
        book.close()


def sniff(lines: list[str], timestamp_column: str | None = None) -> tuple[Dialect, Header]:
    """A CSV file's dialect and header from its first lines (the module docstring says how)."""
    skip = 0
    if lines and (hint := _EXCEL_SEPARATOR.match(lines[0])):
        skip, lines = 1, lines[1:]
        delimiter = hint.group(1)
    else:
        rows = [line for line in lines if line.strip()]
        delimiter = _steady(rows) or _steady(rows[-max(3, len(rows) // 2):]) or ","  # the readings below a preamble
    # Each line ends again as read, so a name broken across lines inside quotes keeps the break.
    reader = csv.reader((line + "\n" for line in lines), delimiter=delimiter)
    rows, ends = [], []  # each row, and the lines read once it is
    for row in reader:
        rows.append(row)
        ends.append(reader.line_num)
    header = find_header(rows, timestamp_column)
    broken = ends[header.data_row - 1] - header.data_row if 0 < header.data_row <= len(ends) else 0
    cells = [cell.strip('"') for line in lines[header.data_row + broken:] for cell in line.split(delimiter)]
    decimal = "," if delimiter != "," and any(_DECIMAL_COMMA.match(c) for c in cells) else "."
    return Dialect(delimiter, skip + header.names_row, decimal, header.data_row - header.names_row,
                   broken_lines=broken, widest=max((len(row) for row in rows[header.data_row:]), default=0)), header


def _steady(rows: list[str]) -> str | None:
    """The delimiter that splits every row into the same number of cells (the most cells
    on a tie), None when none does."""
    counts = {d: [row.count(d) for row in rows] for d in _DELIMITERS}
    steady = [d for d, n in counts.items() if n and n[0] > 0 and len(set(n)) == 1]
    return max(steady, key=lambda d: counts[d][0]) if steady else None


def _encoding(path: Path) -> str:
    """UTF-16 where the file starts with its byte-order mark; Windows-1252 where its first
    64 KiB are not UTF-8 (Excel's "CSV" on a Western European Windows, ``Zähler`` written
    as one byte); else UTF-8, a byte-order mark dropped."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle:
        start = handle.read(1 << 16)
    if start[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    try:
        start.decode("utf-8")
    except UnicodeDecodeError as error:
        if len(start) < 1 << 16 or error.start < len(start) - 3:  # not a character cut by the 64 KiB
            return "cp1252"
    return "utf-8-sig"


def _head(path: Path, encoding: str = "utf-8-sig") -> list[str]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding=encoding, errors="replace", newline="") as handle:
        return [line.rstrip("\r\n") for line in itertools.islice(handle, _SNIFF_LINES)]


def _read_csv(path: Path, dialect: Dialect, **kwargs):
    return pd.read_csv(path, sep=dialect.delimiter, encoding=dialect.encoding, encoding_errors="replace", **kwargs)


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return max(lines - 1, 1)
