"""Damaged and odd meter files: each is refused in one line (exit 2) or imported with its bad
rows quarantined, never a traceback, and the readings stored before are kept.

The files are what a download cut short, a disk or a mail gateway leaves of a real export,
or what a spreadsheet or a logger writes at its edges: a compressed stream whose bytes were
changed or cut, a workbook whose sheet XML or zip member is broken or that lists no sheet, a
zipped NEM12 file failing its checksum, NEM12 records out of order, XML declaring an
encoding no codec knows, a row with more cells than its header names.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.cli_support import run_cli

DEVICE = "meter-1"
GOOD = pd.DataFrame({"ts": pd.date_range("2024-06-01", periods=6, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "solar_generation_kw": np.linspace(0.5, 3.0, 6)})


@pytest.fixture()
def cloud_db(tmp_path):
    """A cloud store already holding six readings of the device."""
    GOOD.to_csv(tmp_path / "good.csv", index=False)
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "good.csv"), "--device-id", DEVICE,
                                         "--cloud-db", str(db)]) == 0
    return db


def imported(path, db, capsys, *more: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_cli(run_cloud_sync.main, ["--import", str(path), "--device-id", DEVICE, "--cloud-db", str(db), *more])
    out, err = capsys.readouterr()
    return code, out, err


def stored(db) -> pd.DataFrame:
    with SQLiteCloudStore(db) as store:
        return store.read_readings(DEVICE)


def csv_text(periods: int, start: str = "2024-07-01") -> str:
    times = pd.date_range(start, periods=periods, freq="15min", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    return "ts,solar_generation_kw\n" + "".join(f"{t},{k % 7 * 0.25}\n" for k, t in enumerate(times))


def workbook(rows: list[list[object]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    for row in rows:
        book.active.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def rezipped(data: bytes, member: str, change) -> bytes:
    """A zip archive (a workbook) with one member's text changed."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            body = source.read(item)
            target.writestr(item, change(body.decode()).encode() if item.filename == member else body)
    return out.getvalue()


def corrupt_gzip(tmp_path) -> tuple[str, bytes]:
    data = bytearray(gzip.compress(csv_text(12).encode()))
    data[10] ^= 0xFF  # the first byte of the deflate stream
    return "meter.csv.gz", bytes(data)


def cut_gzip(tmp_path) -> tuple[str, bytes]:
    """Damage past the first 64 KiB read for the header: found while the rows are read."""
    data = gzip.compress(csv_text(6000).encode())
    return "meter.csv.gz", data[: len(data) * 3 // 4]


def broken_sheet(tmp_path) -> tuple[str, bytes]:
    book = workbook([["ts", "solar_generation_kw"], ["2024-07-01T00:00:00Z", 1.0]])
    return "meter.xlsx", rezipped(book, "xl/worksheets/sheet1.xml", lambda text: text.replace("</sheetData>", "<row>"))


def no_sheet(tmp_path) -> tuple[str, bytes]:
    book = workbook([["ts", "solar_generation_kw"], ["2024-07-01T00:00:00Z", 1.0]])
    return "meter.xlsx", rezipped(book, "xl/workbook.xml", lambda text: re.sub(r"<sheets>.*</sheets>", "<sheets/>", text))


def nem12_zip_bad_crc(tmp_path) -> tuple[str, bytes]:
    text = ("100,NEM12,202310030900,MDP1,RETAILER1\n200,4102345678,E1,1,E1,N1,METER123,KWH,30,20231231\n"
            "300,20230930," + ",".join(["0.2000"] * 48) + ",A,,,20231003090000,\n900\n")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("nem12.csv", text)
    data = bytearray(out.getvalue())
    at = data.index(b"0.2000")
    data[at] = ord("9")  # stored, not compressed: the checksum no longer matches
    return "nem12.zip", bytes(data)


def nem12_text(tmp_path, channel: str, days: str) -> tuple[str, bytes]:
    return "nem12.csv", f"100,NEM12,202310030900,MDP1,RETAILER1\n{channel}{days}900\n".encode()


DAY = "300,20230930," + ",".join(["0.2000"] * 48) + ",A,,,20231003090000,\n"


@pytest.mark.parametrize("make, message", [
    (corrupt_gzip, r"cannot read \(Error -3 while decompressing data"),
    (cut_gzip, r"cannot read near line \d+ \(Compressed file ended"),
    (broken_sheet, r"cannot read \(mismatched tag"),
    (no_sheet, r"a workbook without a sheet; expected the readings on its first sheet"),
    (nem12_zip_bad_crc, r"cannot read \(Bad CRC-32"),
    (lambda tmp_path: nem12_text(tmp_path, "", DAY), r"not readable as NEM12 \(.*\); expected AEMO's NEM12"),
    (lambda tmp_path: nem12_text(tmp_path, "200,4102345678,E1,1,E1,N1,METER123,KWH,0,20231231\n", DAY),
     r"not readable as NEM12 \(division by zero\)"),
    (lambda tmp_path: ("usage.xml", b'<?xml version="1.0" encoding="bogus"?><feed xmlns="http://www.w3.org/2005/Atom"/>'),
     r"not readable as Green Button XML \(unknown encoding: bogus\)"),
], ids=["gzip-corrupt", "gzip-cut", "sheet-xml-broken", "workbook-no-sheet", "zip-crc", "nem12-300-before-200",
        "nem12-interval-0", "xml-unknown-encoding"])
def test_a_damaged_file_is_refused_in_one_line_and_the_store_kept(tmp_path, cloud_db, capsys, make, message):
    name, data = make(tmp_path)
    (tmp_path / name).write_bytes(data)
    code, _, err = imported(tmp_path / name, cloud_db, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert stored(cloud_db)[dd.SOLAR_KW].tolist() == pytest.approx(GOOD["solar_generation_kw"].tolist())


def test_unix_times_with_a_fraction_of_a_second_import(tmp_path, cloud_db, capsys):
    """Loggers write Unix times with milliseconds as a decimal: 1719792000.5 is half a
    second past the minute, and a row whose time is no number beside them is refused alone."""
    (tmp_path / "meter.csv").write_text("ts,solar_generation_kw\nx,9\n1719792000.5,1\n1719792900.5,2\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 0, err
    assert out.startswith("imported 2 readings of meter-1 (1 quarantined)")
    new = stored(cloud_db).set_index(dd.TS)[dd.SOLAR_KW]
    assert new[pd.Timestamp("2024-07-01T00:00:00.5Z")] == 1 and new[pd.Timestamp("2024-07-01T00:15:00.5Z")] == 2


def test_an_event_file_row_without_an_entity_is_no_entitys(tmp_path, cloud_db, capsys):
    (tmp_path / "history.csv").write_text("entity_id,state,last_changed\n,7,2024-07-01T10:00:00Z\n"
                                          "sensor.pv,1000,2024-07-01T10:00:00Z\nsensor.pv,1000,2024-07-01T11:00:00Z\n")
    code, out, err = imported(tmp_path / "history.csv", cloud_db, capsys, "--column-map",
                              "sensor.pv=solar_generation_kw", "--units", "W")
    assert code == 0, err
    new = stored(cloud_db).set_index(dd.TS)[dd.SOLAR_KW]
    assert new[pd.Timestamp("2024-07-01T10:30:00Z")] == pytest.approx(1.0)


def test_parquet_columns_of_one_name_are_told_apart_as_a_headers_are(tmp_path, cloud_db, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table([pa.array(["2024-07-01T00:15:00Z", "2024-07-01T00:30:00Z"]), pa.array([1.0, 2.0]),
                      pa.array([5.0, 6.0])], names=["ts", "pv", "pv"])
    pq.write_table(table, tmp_path / "meter.parquet")
    code, out, err = imported(tmp_path / "meter.parquet", cloud_db, capsys, "--column-map", "pv.1=solar_generation_kw")
    assert code == 0, err
    new = stored(cloud_db).set_index(dd.TS)[dd.SOLAR_KW]
    assert new[pd.Timestamp("2024-07-01T00:30:00Z")] == 6.0
    assert "columns not imported (no reading field; --column-map FILE_COLUMN=field): pv" in out


def test_a_date_cell_beyond_what_nanoseconds_hold_is_quarantined_with_its_row(tmp_path, cloud_db, capsys):
    """A year-9999 date cell (a spreadsheet's placeholder) is a time after the import: its
    row is quarantined with the cell as text, and the good row beside it stored."""
    import datetime as dt

    (tmp_path / "meter.xlsx").write_bytes(workbook([["ts", "solar_generation_kw"], [dt.datetime(2024, 7, 1, 12), 1.0],
                                                    [dt.datetime(9999, 12, 31, 23, 59), 1.0]]))
    code, out, err = imported(tmp_path / "meter.xlsx", cloud_db, capsys, "--timezone", "UTC")
    assert code == 0, err
    assert out.startswith("imported 1 readings of meter-1 (1 quarantined)")
    with SQLiteCloudStore(cloud_db) as store:
        held = store.read_quarantine(DEVICE)
    assert "9999-12-31T23:59:00" in str(held[s.PAYLOAD].iloc[0])


@pytest.mark.parametrize("zone", ["America/Denver", "Asia/Tokyo"])
def test_a_wall_clock_time_at_the_calendars_end_is_quarantined_with_its_row(tmp_path, cloud_db, capsys, zone):
    """Local times of a placeholder day (9999-12-31, 0001-01-01) have no zone rules to place
    them by, west of UTC or east: each row is quarantined with why, the good row stored."""
    (tmp_path / "meter.csv").write_text("ts,solar_generation_kw\n9999-12-31 23:15,1\n2024-07-01 12:00,1\n"
                                        "0001-01-01 00:15,1\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys, "--timezone", zone)
    assert code == 0, err
    assert out.startswith("imported 1 readings of meter-1 (2 quarantined)")
    with SQLiteCloudStore(cloud_db) as store:
        reasons = sorted(store.read_quarantine(DEVICE)[s.REASON])
    assert reasons == [f"line {n}: local time {t} lies within a day of the calendar's end, where no zone's rules place "
                       "it; expected a reading's time" for n, t in ((2, "9999-12-31 23:15:00"), (4, "0001-01-01 00:15:00"))]


def test_a_time_before_any_meter_is_quarantined_with_its_row(tmp_path, cloud_db, capsys):
    """A placeholder year, a time of day read without its date (1900-01-01): stored, it
    would be the site's oldest history, from which lookbacks and backfills reckon."""
    (tmp_path / "meter.csv").write_text("ts,solar_generation_kw\n0002-06-01T12:00Z,1\n2024-07-01T12:00Z,1\n"
                                        "1677-09-22T00:00Z,1\n1969-12-31T23:45Z,1\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 0, err
    assert out.startswith("imported 1 readings of meter-1 (3 quarantined)")
    with SQLiteCloudStore(cloud_db) as store:
        reasons = sorted(store.read_quarantine(DEVICE)[s.REASON])
    assert reasons == [f"line {n}: time {t}Z is before 1970; expected a measured time (check --timestamp-format: a "
                       "pattern without a date reads as 1900-01-01)"
                       for n, t in ((2, "0002-06-01 12:00:00"), (4, "1677-09-22 00:00:00"), (5, "1969-12-31 23:45:00"))]
    (tmp_path / "times.csv").write_text("ts,solar_generation_kw\n10:00,1\n10:15,1\n")
    code, out, err = imported(tmp_path / "times.csv", cloud_db, capsys, "--timestamp-format", "%H:%M")
    assert code == 0 and out.startswith("imported 0 readings of meter-1 (2 quarantined)"), (out, err)


def test_a_row_wider_than_a_units_columns_names_reads(tmp_path, cloud_db, capsys):
    (tmp_path / "meter.csv").write_text("ts,UNITS\n2024-06-01T00:00Z,kWh,5\n")
    code, _, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 2 and err.count("\n") == 1 and "no reading fields found" in err


def test_rows_wider_than_the_header_are_quarantined_by_line_and_the_rest_stored(tmp_path, cloud_db, capsys):
    """A cell more than the header names (a decimal comma in a comma-separated file, a
    logger's extra field) leaves no way to tell which column each cell is: the row is
    quarantined with its line, whether it lies among the first lines read for the header
    (its cells kept) or far below them and wider still, and every other row is stored."""
    lines = csv_text(300).splitlines()
    lines[1] += ",7"  # the first reading
    lines[50] += ",7,8,9"  # wider than any of the first lines: pandas leaves it out, saying its line
    lines[250] = lines[250].rsplit(",", 1)[0] + ",1,25"  # 1.25 written with a decimal comma
    lines[251] = ""
    (tmp_path / "meter.csv").write_text("\n".join(lines) + "\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 0 and err.count("\n") <= 1, err  # the log's one warning line
    assert out.startswith("imported 296 readings of meter-1 (3 quarantined)")
    with SQLiteCloudStore(cloud_db) as store:
        held = store.read_quarantine(DEVICE)
    by_line = dict(zip(held[s.REASON].str.extract(r"^line (\d+)")[0].astype(int), held[s.PAYLOAD]))
    assert sorted(by_line) == [2, 51, 251]
    assert all("more cells than its header's 2 names" in reason for reason in held[s.REASON])
    assert by_line[2]["file_row"]["cell beyond the names 1"] == "7"
    assert by_line[51]["file_row"]["cell beyond the names 1"] == "(5 cells, not read)"
    assert by_line[251]["file_row"]["cell beyond the names 1"] == "25"


def test_thousands_of_unnamed_columns_are_reported_in_one_short_line(tmp_path, cloud_db, capsys):
    (tmp_path / "meter.csv").write_text("ts,solar_generation_kw" + "," * 500 + "\n2024-07-01T00:15:00Z,1\n"
                                        "2024-07-01T00:30:00Z,2\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 0, err
    line = next(x for x in out.splitlines() if "columns not imported" in x)
    assert line.endswith("and 480 more") and len(line) < 400


def test_cells_every_reading_holds_beyond_the_names_are_columns_of_their_own(tmp_path, cloud_db, capsys):
    """A logger whose names row leaves its last column unnamed (a status flag on every
    row) misaligns nothing: the column is ``column 3``, not a reason to refuse each row."""
    (tmp_path / "meter.csv").write_text("ts,solar_generation_kw\n2024-07-01T00:15:00Z,1,ok\n2024-07-01T00:30:00Z,2,ok\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 0, err
    assert out.startswith("imported 2 readings of meter-1 (0 quarantined)")
    assert "columns not imported (no reading field; --column-map FILE_COLUMN=field): column 3" in out


def test_wide_rows_far_below_the_first_lines_are_each_quarantined(tmp_path, cloud_db, capsys):
    """pandas names every line of a block it leaves out in one note: each is quarantined,
    consecutive ones too, and a line of thousands of cells (a pasted or cut file) among them."""
    lines = csv_text(300).splitlines()
    for k in (200, 201, 202):
        lines[k] += ",x,y"
    lines[250] += "," * 5000
    (tmp_path / "meter.csv").write_text("\n".join(lines) + "\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 0, err
    assert out.startswith("imported 296 readings of meter-1 (4 quarantined)")
    with SQLiteCloudStore(cloud_db) as store:
        held = store.read_quarantine(DEVICE)
    assert sorted(held[s.REASON].str.extract(r"^line (\d+)")[0].astype(int)) == [201, 202, 203, 251]


def test_a_nul_in_a_quarantined_cell_is_stored_shown(tmp_path, cloud_db, capsys):
    """PostgreSQL refuses U+0000 in text and JSON: a cell holding one is quarantined with it
    shown as U+2400, on every store alike, and the good rows are stored."""
    (tmp_path / "meter.csv").write_bytes(b"ts,solar_generation_kw\n2024-07-01T00:15:00Z,1\n2024-07-01T00:30:00Z,3\x00\n"
                                         b"2024-07-01T00:45:00Z,x\x00y\n2024-07-01T01:00:00Z,4\n")
    code, out, err = imported(tmp_path / "meter.csv", cloud_db, capsys)
    assert code == 0, err
    assert out.startswith("imported 2 readings of meter-1 (2 quarantined)")
    with SQLiteCloudStore(cloud_db) as store:
        held = store.read_quarantine(DEVICE)
    assert "x\u2400y" in str(held[s.PAYLOAD].tolist()) and "\x00" not in str(held[s.PAYLOAD].tolist())
    assert not any("\x00" in reason for reason in held[s.REASON])


def test_json_output_is_one_document_with_a_site_declared(tmp_path, capsys):
    """--json: stdout is the import's JSON alone; what the command did besides (the site
    declared) is said on stderr. A mistyped --import changes nothing, the site included."""
    import json
    import shutil

    from cloud.store import schema as sc

    shutil.copy("examples/site.json", tmp_path / "site.json")
    (tmp_path / "meter.csv").write_text(csv_text(8))
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import", str(tmp_path / "nope.csv"),
                                         "--cloud-db", str(db)]) == 2
    with SQLiteCloudStore(db) as store:
        assert store.read_frame(sc.SITES, {}).empty
    capsys.readouterr()
    assert run_cli(run_cloud_sync.main, ["--site", str(tmp_path / "site.json"), "--import", str(tmp_path / "meter.csv"),
                                         "--cloud-db", str(db), "--json", "--timezone", "UTC"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rows_stored"] == 8 and "declared" in err
