"""``--import FILE --device-id ID``: measured meter data through the sync's validation and
upsert path; fields the file lacks stay empty."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.postgres import PostgresCloudStore
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.importer import JOB as IMPORT_JOB
from cloud.sync.importer import NO_TIME, ImportOptions, import_file, parse_column_map, print_import
from cloud.sync.status import newest_imports
from cloud.sync.timestamps import names_utc
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.errors import StoreError, UsageError
from tests.pg_fixtures import pg_url, truncate_all  # noqa: F401  (fixture)
from tests.test_config import awkward_paths

ROOT = Path(__file__).resolve().parents[1]


def meter_frame(steps: int = 96, freq: str = "15min") -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "Time": pd.date_range("2024-03-20 00:00", periods=steps, freq=freq).strftime("%Y-%m-%d %H:%M:%S"),
        "pv_w": np.round(rng.uniform(0, 4000, steps), 1),
        "load_w": np.round(rng.uniform(200, 3000, steps), 1),
        "meter_note": "ok",
    })


def write(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cloud(request, tmp_path):
    if request.param == "sqlite":
        with SQLiteCloudStore(tmp_path / "cloud.db") as store:
            yield store
        return
    url = request.getfixturevalue("pg_url")
    with PostgresCloudStore(url) as store:
        store.init_schema()
        truncate_all(url)
        yield store


OPTIONS = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW, "load_w": dd.LOAD_TOTAL}, units="W",
                        timezone="Europe/Berlin", timestamp_column="Time")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("freq", ["15min", "1h"])
def test_import_maps_columns_converts_units_and_zone_leaves_the_rest_empty(tmp_path, cloud, suffix, freq):
    raw = meter_frame(freq=freq)
    path = tmp_path / f"meter{suffix}"
    write(raw, path)
    result = import_file(path, cloud, OPTIONS)
    back = cloud.read_readings("meter-1")
    assert result.rows_synced == len(raw) == len(back)
    assert back[dd.SOLAR_KW].tolist() == pytest.approx((raw["pv_w"] / 1000).tolist())
    assert back[dd.LOAD_TOTAL].tolist() == pytest.approx((raw["load_w"] / 1000).tolist())
    assert back[dd.TS][0] == pd.Timestamp("2024-03-19T23:00:00Z")  # Berlin is UTC+1 before the spring switch
    untouched = [c for c in dd.FIELD_TYPES if c not in (dd.SOLAR_KW, dd.LOAD_TOTAL)]
    assert back[untouched].isna().all().all()
    assert cloud.last_run("cloud_import")[s.STATUS] == "ok"


def test_dst_change_keeps_a_regular_utc_series(tmp_path, cloud):
    raw = meter_frame(steps=8, freq="1h")
    raw["Time"] = pd.date_range("2024-10-27 00:00", periods=8, freq="1h", tz="UTC").tz_convert(
        "Europe/Berlin").strftime("%Y-%m-%d %H:%M:%S")  # local clock repeats 02:00-03:00
    write(raw, tmp_path / "m.csv")
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    ts = cloud.read_readings("meter-1")[dd.TS]
    assert (ts.diff().dropna() == pd.Timedelta(hours=1)).all() and len(ts) == 8


def test_a_local_time_the_clock_skips_is_quarantined_not_guessed(tmp_path, cloud):
    raw = meter_frame(steps=4, freq="1h")
    raw["Time"] = ["2024-03-31 00:00", "2024-03-31 01:00", "2024-03-31 02:00", "2024-03-31 03:00"]
    write(raw, tmp_path / "m.csv")
    result = import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    (row,) = cloud.read_quarantine("meter-1").to_dict("records")
    assert row[s.REASON].startswith("line 4: local time 2024-03-31 02:00:00 does not exist in Europe/Berlin")
    assert row[dd.TS] == NO_TIME + pd.Timedelta(seconds=4)
    assert row[s.PAYLOAD]["file_row"]["Time"] == "2024-03-31 02:00"


def test_bad_rows_are_quarantined_blank_cells_are_gaps(tmp_path, cloud):
    """A value out of range refuses its row; a blank cell is a gap of its field, the row's
    other fields stored; a row with nothing but its time is refused. PV a few watts below 0
    is the inverter's night draw: stored as no generation, with the row's load."""
    raw = meter_frame(steps=10)
    raw.loc[2, "pv_w"] = -800.0
    raw.loc[3, "pv_w"] = -4.0
    raw.loc[5, "load_w"] = np.nan
    raw.loc[7, ["pv_w", "load_w"]] = np.nan
    write(raw, tmp_path / "m.csv")
    result = import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert (result.rows_synced, result.rows_quarantined) == (8, 2)
    reasons = cloud.read_quarantine("meter-1")[s.REASON].tolist()
    assert reasons == ["line 4: solar_generation_kw outside [-0.5, 10000] (got -0.8)",
                       "line 9: no value in pv_w, load_w"]
    stored = cloud.read_readings("meter-1").set_index(dd.TS)
    gap = pd.Timestamp("2024-03-20 01:15", tz="Europe/Berlin")
    assert np.isnan(stored.loc[gap, dd.LOAD_TOTAL]) and stored.loc[gap, dd.SOLAR_KW] == pytest.approx(raw.loc[5, "pv_w"] / 1000)
    night = stored.loc[pd.Timestamp("2024-03-20 00:45", tz="Europe/Berlin")]
    assert night[dd.SOLAR_KW] == 0.0 and night[dd.LOAD_TOTAL] == pytest.approx(raw.loc[3, "load_w"] / 1000)


def test_a_pyranometer_s_night_offset_is_no_irradiance_and_keeps_its_row(tmp_path, cloud):
    """NREL's SERF West logger: every night reading of its plane-of-array pyranometer is
    -0.0169 W/m2; each refused its row, the PV with it, and the report called the nights gaps."""
    (tmp_path / "m.csv").write_text("ts,ac_power,poa\n2024-07-01T04:00Z,0,-0.0169\n2024-07-01T04:15Z,0,-3.5\n"
                                    "2024-07-01T04:30Z,0,-250\n2024-07-01T18:00Z,2500,640\n")
    options = ImportOptions("meter-1", {"ac_power": dd.SOLAR_KW, "poa": dd.SOLAR_IRRADIANCE}, units="W")
    result = import_file(tmp_path / "m.csv", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    assert cloud.read_readings("meter-1")[dd.SOLAR_IRRADIANCE].tolist() == [0.0, 0.0, 640.0]
    (reason,) = cloud.read_quarantine("meter-1")[s.REASON]
    assert reason == "line 4: solar_irradiance_w_m2 outside [-20, 1500] (got -250.0)"


def test_a_blank_cell_never_clears_what_another_file_stored(tmp_path, cloud):
    """The inverter's PV first; then a file of the grid meter beside a PV column left blank
    at night: the grid flow is stored for every row, and the PV stays as the first file had it."""
    raw = meter_frame(steps=6)
    write(raw[["Time", "pv_w"]], tmp_path / "pv.csv")
    import_file(tmp_path / "pv.csv", cloud, ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W"))
    both = raw.assign(grid_w=raw["load_w"] - raw["pv_w"])
    both.loc[:2, "pv_w"] = np.nan
    write(both[["Time", "pv_w", "grid_w"]], tmp_path / "both.csv")
    result = import_file(tmp_path / "both.csv", cloud, ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW,
                                                                                 "grid_w": dd.NET_GRID_FLOW}, units="W"))
    assert (result.rows_synced, result.rows_quarantined) == (6, 0)
    stored = cloud.read_readings("meter-1")
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx((raw["pv_w"] / 1000).tolist())
    assert stored[dd.NET_GRID_FLOW].tolist() == pytest.approx((both["grid_w"] / 1000).tolist())


def test_a_second_file_of_other_fields_keeps_what_the_first_brought(tmp_path, cloud):
    """PV from the inverter's portal, load from the smart meter: two files of one home."""
    raw = meter_frame(steps=6)
    write(raw[["Time", "pv_w"]], tmp_path / "pv.csv")
    write(raw[["Time", "load_w"]].iloc[2:], tmp_path / "load.csv")
    import_file(tmp_path / "pv.csv", cloud, ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W"))
    import_file(tmp_path / "load.csv", cloud, ImportOptions("meter-1", {"load_w": dd.LOAD_TOTAL}, units="W"))
    stored = cloud.read_readings("meter-1")
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx((raw["pv_w"] / 1000).tolist())
    assert stored[dd.LOAD_TOTAL].tolist()[2:] == pytest.approx((raw["load_w"] / 1000).tolist()[2:])
    assert stored[dd.LOAD_TOTAL].isna().tolist()[:2] == [True, True]


def test_import_is_idempotent(tmp_path, cloud):
    write(meter_frame(), tmp_path / "m.csv")
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert cloud.count_readings("meter-1") == 96


@pytest.mark.parametrize("text, message", [
    ("pv_w", "'pv_w': expected FILE_COLUMN=field pairs"),
    ("pv_w=solar_kw", "'pv_w=solar_kw': 'solar_kw' is not a reading field"),
    ("pv_w=solar_generation_kw,,load", "'load': expected FILE_COLUMN=field pairs"),
    ("pv_w=", "'pv_w=': expected FILE_COLUMN=field pairs"),
    ("=solar_generation_kw", "'=solar_generation_kw': expected FILE_COLUMN=field pairs"),
    ("PV=solar_generation_kw,PV=home_load_total_load_kw",
     "--column-map: column 'PV' is mapped to solar_generation_kw and to home_load_total_load_kw; expected each column once"),
])
def test_bad_column_map_is_a_usage_error(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_column_map(text)


def test_a_column_map_column_may_hold_commas_and_equals_signs():
    """Portals name columns ``Leistung, AC (W)`` or ``P=AC (W)``: the field after the last
    ``=`` ends each pair. The same column twice to the same field is one mapping."""
    assert parse_column_map(" Leistung, AC (W) = solar_generation_kw, Bezug, gesamt=home_load_total_load_kw,") == {
        "Leistung, AC (W)": dd.SOLAR_KW, "Bezug, gesamt": dd.LOAD_TOTAL}
    assert parse_column_map("P=AC (W)=solar_generation_kw,Export=-net_grid_flow_kw,P=AC (W)=solar_generation_kw") == {
        "P=AC (W)": dd.SOLAR_KW, "Export": f"-{dd.NET_GRID_FLOW}"}


@pytest.mark.parametrize("kind", ["device", "pipe", "folder", "loop", "long"])
def test_a_path_that_is_no_file_is_refused_by_what_it_is(tmp_path, capsys, kind):
    """A folder, a device, a pipe, a loop of links: said as such, not as a file not found, and
    refused before a run starts (a pipe would wait for ever, a link loop failed resolving)."""
    path, said = awkward_paths(tmp_path)[kind]
    args = ["--import", path, "--device-id", "meter-1", "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --import ") and line.endswith(f": {said}; expected a meter file"), line
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.last_run("cloud_import") is None


def test_file_without_timestamp_or_fields_says_what_it_expected(tmp_path, cloud):
    pd.DataFrame({"when": ["2024-01-01"], "pv_w": [1.0]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(UsageError, match="no timestamp column; expected one named like"):
        import_file(tmp_path / "a.csv", cloud, ImportOptions("m"))
    pd.DataFrame({"ts": ["2024-01-01"], "pv_w": [1.0]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(UsageError, match="no reading fields found; map the file's columns"):
        import_file(tmp_path / "b.csv", cloud, ImportOptions("m"))


def test_a_european_spreadsheet_export_is_read_by_its_own_dialect(tmp_path, cloud):
    """Excel's ``sep=;`` line, a byte-order mark, ``;`` between cells, decimal commas and
    thousands dots, German column names and day-first times, as a German portal exports."""
    text = ("sep=;\nDatum;Uhrzeit;PV (W);Verbrauch (W)\n"
            "25.03.2024;12:00;1.234,5;553,5\n25.03.2024;12:15;n/v;610\n25.03.2024;12:30;2.010,25;1.005,0\n")
    (tmp_path / "portal.csv").write_bytes(text.encode("utf-8-sig"))
    options = ImportOptions("meter-1", {"PV (W)": dd.SOLAR_KW, "Verbrauch (W)": dd.LOAD_TOTAL}, units="W",
                            timezone="Europe/Berlin", timestamp_format="%d.%m.%Y %H:%M")
    result = import_file(tmp_path / "portal.csv", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    stored = cloud.read_readings("meter-1")
    assert stored[dd.TS].tolist() == [pd.Timestamp("2024-03-25T11:00Z"), pd.Timestamp("2024-03-25T11:30Z")]
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([1.2345, 2.01025])
    assert stored[dd.LOAD_TOTAL].tolist() == pytest.approx([0.5535, 1.005])
    assert cloud.read_quarantine("meter-1")[s.REASON].tolist() == ["line 4: PV (W) 'n/v' is not a number"]


def test_an_excel_export_is_read_from_its_first_sheet_with_its_cells_types(tmp_path, cloud):
    """Date cells are wall-clock times, number cells numbers; a text where a number belongs
    is refused by its sheet row, and the sheet's empty formatted tail is no row."""
    from datetime import datetime

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Zeitstempel", "PV (W)", "Verbrauch (W)"])
    sheet.append([datetime(2024, 7, 1, 12, 0), 1234.5, 553])
    sheet.append([datetime(2024, 7, 1, 12, 15), "n/v", 610])
    sheet.append(["2024-07-01 12:30", 2010.25, 1005.0])
    sheet.cell(row=9, column=1).number_format = "yyyy-mm-dd"  # formatted, never filled
    book.create_sheet("Notes").append(["exported by the portal"])
    book.save(tmp_path / "portal.xlsx")
    options = ImportOptions("meter-1", {"PV (W)": dd.SOLAR_KW, "Verbrauch (W)": dd.LOAD_TOTAL}, units="W",
                            timezone="Europe/Berlin")
    result = import_file(tmp_path / "portal.xlsx", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    stored = cloud.read_readings("meter-1")
    assert stored[dd.TS].tolist() == [pd.Timestamp("2024-07-01T10:00Z"), pd.Timestamp("2024-07-01T10:30Z")]
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([1.2345, 2.01025])
    assert cloud.read_quarantine("meter-1")[s.REASON].tolist() == ["sheet row 3: PV (W) 'n/v' is not a number"]


def test_a_file_that_is_not_the_workbook_it_claims_is_one_line(tmp_path, cloud):
    (tmp_path / "m.xlsx").write_text("Time,pv_w\n")
    with pytest.raises(UsageError, match=r"--import .*m.xlsx: cannot read \(File is not a zip file\)"):
        import_file(tmp_path / "m.xlsx", cloud, OPTIONS)


@pytest.mark.parametrize("delimiter", ["\t", "|", ","])
def test_a_file_split_by_tabs_or_bars_keeps_its_decimal_points(tmp_path, cloud, delimiter):
    meter_frame(steps=8).to_csv(tmp_path / "m.csv", index=False, sep=delimiter)
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    stored = cloud.read_readings("meter-1")
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx((meter_frame(steps=8)["pv_w"] / 1000).tolist())


def test_unix_times_import_as_the_instants_they_count(tmp_path, cloud):
    raw = meter_frame(steps=4)
    instants = pd.date_range("2024-03-20", periods=4, freq="15min", tz="UTC")
    raw["Time"] = instants.as_unit("s").asi8
    write(raw, tmp_path / "m.csv")
    assert import_file(tmp_path / "m.csv", cloud, OPTIONS).rows_synced == 4
    assert cloud.read_readings("meter-1")[dd.TS].tolist() == list(instants)


@pytest.mark.parametrize("fmt, fix", [(None, "or --timestamp-format PATTERN such as '%d.%m.%Y %H:%M'"),
                                      ("%Y/%m/%d %H:%M", "times in --timestamp-format '%Y/%m/%d %H:%M'; check the pattern")])
def test_a_file_of_times_in_a_format_not_given_is_refused_whole_and_nothing_stored(tmp_path, cloud, fmt, fix):
    write(meter_frame(steps=5).assign(Time=lambda f: pd.to_datetime(f["Time"]).dt.strftime("%d %b %Y %H:%M")),
          tmp_path / "m.csv")
    options = ImportOptions("meter-1", OPTIONS.column_map, units="W", timestamp_format=fmt)
    with pytest.raises(UsageError, match="m.csv: no time in the first 5 rows can be read "
                                         r"\(such as '20 Mar 2024 00:00'\); expected .*" + re.escape(fix)):
        import_file(tmp_path / "m.csv", cloud, options)
    assert cloud.count_readings("meter-1") == 0 and cloud.read_quarantine("meter-1").empty
    assert cloud.read_frame(s.RUNS)[s.STATUS].tolist() == ["failed"]


@pytest.mark.parametrize("pattern, shown", [
    ("%d/%m/%Y %H:%M", "'%d/%m/%Y %H:%M', day/month"),  # a British portal
    ("%m/%d/%Y %I:%M %p", "'%m/%d/%Y %I:%M %p', month/day"),  # an American one
    ("%m/%d/%Y %I:%M%p", "'%m/%d/%Y %I:%M%p', month/day"),  # Excel's "h:mmAM/PM" number format
    ("%d.%m.%Y %H:%M:%S", "'%d.%m.%Y %H:%M:%S', day/month"),  # a German one
])
def test_numeric_dates_are_read_in_the_order_their_numbers_above_12_show(tmp_path, capsys, pattern, shown):
    frame = meter_frame(steps=96 * 14, freq="15min")  # 20 March to 2 April: days above 12 and below
    frame["Time"] = pd.to_datetime(frame["Time"]).dt.strftime(pattern)
    write(frame, tmp_path / "m.csv")
    argv = ["--import", str(tmp_path / "m.csv"), "--device-id", "meter-1", "--column-map", "pv_w=solar_generation_kw",
            "--units", "W", "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, argv) == 0
    out = capsys.readouterr().out
    assert f"  times: Time read as {shown}: a number above 12 says which (--timestamp-format to change)" in out
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        stored = store.read_readings("meter-1")[dd.TS]
    assert len(stored) == 96 * 14
    assert stored.iloc[[0, 96 * 13]].tolist() == [pd.Timestamp("2024-03-20T00:00Z"), pd.Timestamp("2024-04-02T00:00Z")]


def test_numeric_dates_that_leave_the_order_open_are_refused_naming_both_patterns(tmp_path, capsys):
    frame = meter_frame(steps=96 * 3)
    frame["Time"] = pd.date_range("2024-03-01", periods=96 * 3, freq="15min").strftime("%d/%m/%Y %H:%M")
    write(frame, tmp_path / "m.csv")
    argv = ["--import", str(tmp_path / "m.csv"), "--device-id", "meter-1", "--column-map", "pv_w=solar_generation_kw",
            "--units", "W", "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, argv) == 2
    assert capsys.readouterr().err.strip().endswith(
        "m.csv: times such as '01/03/2024 00:00' may be day/month or month/day, and no number above 12 says which; "
        "expected --timestamp-format '%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M'")
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.count_readings("meter-1") == 0 and store.read_quarantine("meter-1").empty


@pytest.mark.parametrize("pattern", ["%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M"])
def test_numeric_date_order_left_open_by_the_first_chunk_is_read_from_later_rows(tmp_path, cloud, pattern):
    """A minute logger's month starts with a week of days up to 12: the rest of the file says
    which number is the day, as a user reading it would see."""
    frame = meter_frame(steps=96 * 16)
    frame["Time"] = pd.date_range("2024-03-01", periods=96 * 16, freq="15min").strftime(pattern)
    write(frame, tmp_path / "m.csv")
    options = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W", batch_size=500)
    result = import_file(tmp_path / "m.csv", cloud, options)
    stored = cloud.read_readings("meter-1")[dd.TS]
    assert result.rows_synced == 96 * 16 and len(stored) == 96 * 16
    assert stored.iloc[[0, -1]].tolist() == [pd.Timestamp("2024-03-01T00:00Z"), pd.Timestamp("2024-03-16T23:45Z")]


def test_cli_import(tmp_path, capsys):
    write(meter_frame(steps=12), tmp_path / "m.csv")
    args = ["--import", str(tmp_path / "m.csv"), "--device-id", "meter-9", "--column-map",
            "pv_w=solar_generation_kw,load_w=home_load_total_load_kw", "--units", "W", "--timezone", "UTC",
            "--timestamp-column", "Time", "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["imported 12 readings of meter-9 (0 quarantined)",
                       "  columns not imported (no reading field; --column-map FILE_COLUMN=field): meter_note"]
    # The one rule of a zone (the site file's): known, a place's, and a name, not a long path.
    for zone, said in [("Mars/Olympus", "unknown time zone 'Mars/Olympus'; expected an IANA name"),
                       ("localtime", "time zone 'localtime' names no place"),
                       ("x" * 300, "unknown time zone 'xxxx")]:
        assert run_cli(run_cloud_sync.main, [*args[:4], "--timezone", zone]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: --timezone: {said}"), line


def test_a_file_imported_under_the_wrong_device_is_listed_then_forgotten_by_name(tmp_path, capsys):
    """An import under a mistyped device id leaves rows no later import writes over: --forget
    lists them, removes them only with --yes, and leaves every other device alone."""
    write(meter_frame(steps=12), tmp_path / "m.csv")
    db = str(tmp_path / "cloud.db")
    for device in ("meter-9", "meter-09"):
        assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "m.csv"), "--device-id", device, "--column-map",
                                             "pv_w=solar_generation_kw,load_w=home_load_total_load_kw",
                                             "--cloud-db", db]) == 0
    capsys.readouterr()
    assert run_cli(run_cloud_sync.main, ["--forget", "meter-09", "--cloud-db", db]) == 0
    assert capsys.readouterr().out.startswith(f"meter-09 in sqlite:{db}: readings 12\nnothing removed: add --yes")
    with SQLiteCloudStore(db) as store:
        assert store.count_readings("meter-09") == 12
    assert run_cli(run_cloud_sync.main, ["--forget", "meter-09", "--yes", "--cloud-db", db]) == 0
    assert capsys.readouterr().out == f"removed meter-09 from sqlite:{db}: readings 12\n"
    with SQLiteCloudStore(db) as store:
        assert store.count_readings("meter-09") == 0 and store.count_readings("meter-9") == 12
    for args, message in ((["--forget", "meter-09"], "--forget meter-09: nothing of it is stored in"),
                          (["--yes", "--status"], "--yes confirms --forget DEVICE_ID"),
                          (["--forget", "meter-9", "--init-db"], "--forget DEVICE_ID runs alone")):
        assert run_cli(run_cloud_sync.main, [*args, "--cloud-db", db]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--once", "--interval", "5"], "--interval is the period of --continuous; expected it with --continuous"),
    (["--status", "--interval", "5"], "--interval is the period of --continuous"),
    (["--once", "--json"], "--json prints --status or --import as JSON; expected it with one of them"),
    (["--init-db", "--json"], "--json prints --status or --import as JSON"),
])
def test_a_sync_flag_its_mode_does_not_use_is_refused(tmp_path, capsys, args, message):
    """``--once --interval 5 --json`` synced once and printed text, the two flags dropped unsaid."""
    db = str(tmp_path / "cloud.db")
    assert run_cli(run_cloud_sync.main, [*args, "--cloud-db", db, "--edge-store", str(tmp_path / "edge.db")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line and not (tmp_path / "cloud.db").exists()


def test_forgetting_a_device_removes_its_feature_watermarks_and_keeps_its_sync_watermark(tmp_path):
    """Its feature rows go, so their watermarks go too: left, the feature job would start a
    device imported again under the name past rows no longer stored. The sync's stays."""
    from cloud.feature_engineering.job import covered_source, watermark_source
    from cloud.feature_engineering.settings import FeatureSettings
    from cloud.sync.forget import forget_device

    sources = (watermark_source(FeatureSettings()), covered_source(FeatureSettings()), "edge:sqlite")
    write(meter_frame(steps=12), tmp_path / "m.csv")
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        for device in ("meter-9", "meter-09"):
            import_file(tmp_path / "m.csv", store, ImportOptions(device, {"pv_w": dd.SOLAR_KW}, units="W",
                                                                 timestamp_column="Time"))
            for source in sources:
                store.set_watermark(source, device, pd.Timestamp("2024-03-20T12:00Z"), 1)
        forget_device(store, "meter-09", remove=True)
        assert [sorted(store.watermarks(source)) for source in sources] == [
            ["meter-9"], ["meter-9"], ["meter-09", "meter-9"]]


def test_status_names_each_devices_newest_import(tmp_path, capsys):
    """A device no gateway syncs shows where its readings came from: its newest import's
    time and file."""
    write(meter_frame(steps=12), tmp_path / "m.csv")
    db = str(tmp_path / "cloud.db")
    args = ["--device-id", "meter-9", "--column-map", "pv_w=solar_generation_kw", "--cloud-db", db]
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "m.csv"), *args]) == 0
    capsys.readouterr()
    assert run_cli(run_cloud_sync.main, ["--status", "--json", "--cloud-db", db, "--edge-store",
                                         str(tmp_path / "edge.db")]) == 0
    row = next(d for d in json.loads(capsys.readouterr().out)["devices"] if d["device_id"] == "meter-9")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\dZ m\.csv", row["last_import"]) and row["cloud_rows"] == 12


def test_status_finds_an_import_behind_many_newer_ones_of_other_devices(tmp_path):
    """A site imported once, then a fleet importing every day: the status read only the last
    50 import runs and showed the site as never imported."""
    cloud = SQLiteCloudStore(tmp_path / "cloud.db")
    try:
        for device in ["meter-9", *(f"other-{k}" for k in range(300))]:
            run = cloud.start_run(IMPORT_JOB, {dd.DEVICE_ID: device, "file": f"{device}.csv"})
            cloud.finish_run(run, "ok" if device == "meter-9" else "failed", rows=1)
        found = newest_imports(cloud, {"meter-9", "other-299", "never-imported"})
    finally:
        cloud.close()
    assert set(found) == {"meter-9", "other-299"}
    assert found["meter-9"].endswith(" meter-9.csv") and found["other-299"].endswith(" other-299.csv (failed)")


def test_wall_clock_times_are_read_in_the_declared_sites_zone_unless_told(tmp_path, capsys):
    """A home's logger keeps the home's clock: without --timezone, times without an offset
    are read in the zone its site file declares (else UTC), and the report says so."""
    write(meter_frame(steps=4), tmp_path / "m.csv")
    site = json.loads((Path(__file__).parents[1] / "examples" / "site.json").read_text())
    (tmp_path / "site.json").write_text(json.dumps(site))
    db = str(tmp_path / "cloud.db")
    base = ["--import", str(tmp_path / "m.csv"), "--column-map", "pv_w=solar_generation_kw", "--units", "W",
            "--cloud-db", db]

    def first_time(device: str) -> pd.Timestamp:
        with SQLiteCloudStore(db) as store:
            return store.read_readings(device)[dd.TS].iloc[0]

    assert run_cli(run_cloud_sync.main, [*base, "--site", str(tmp_path / "site.json")]) == 0
    assert (f"  times: wall-clock times read in {site['timezone']} (the declared site's zone; --timezone ZONE to change)"
            in capsys.readouterr().out.splitlines())
    assert first_time(site["device_id"]) == pd.Timestamp("2024-03-20 00:00", tz=site["timezone"]).tz_convert("UTC")
    assert run_cli(run_cloud_sync.main, [*base, "--device-id", "meter-2"]) == 0
    assert ("  times: wall-clock times read in UTC (no --timezone and no declared site; --timezone ZONE to change)"
            in capsys.readouterr().out.splitlines())
    assert first_time("meter-2") == pd.Timestamp("2024-03-20 00:00", tz="UTC")
    assert run_cli(run_cloud_sync.main, [*base, "--device-id", site["device_id"], "--timezone", "Asia/Tokyo"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if "wall-clock" in line]
    assert first_time(site["device_id"]) == pd.Timestamp("2024-03-20 00:00", tz="Asia/Tokyo").tz_convert("UTC")


@pytest.mark.parametrize("device", ["has space", "../up", "", "x" * 65])
def test_device_id_is_checked_where_it_enters(tmp_path, capsys, device):
    write(meter_frame(steps=4), tmp_path / "m.csv")
    with pytest.raises(SystemExit) as stop:
        run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "m.csv"), "--device-id", device, "--cloud-db", str(tmp_path / "c.db")])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("run_cloud_sync.py: error: argument --device-id: device_id ") and "is not valid; expected 1 to 64" in line
    with pytest.raises(UsageError, match="--device-id: device_id 'has space' is not valid"):
        ImportOptions("has space")


@pytest.mark.parametrize("times, reason", [
    (["2024-01-01T00:00", "tomorrow-ish", "2024-01-01T00:30"],
     "line 3: timestamp 'tomorrow-ish' is not a time; expected ISO 8601"),
    (["2024-01-01T00:00Z", "2024-01-01T00:15", "2024-01-01T00:30Z"],
     "line 3: timestamp has no offset while the file's times carry one"),
])
def test_an_unreadable_time_quarantines_its_row_and_the_rest_is_stored(tmp_path, cloud, times, reason):
    write(meter_frame(steps=3).assign(Time=times), tmp_path / "m.csv")
    result = import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    assert cloud.read_quarantine("meter-1")[s.REASON].tolist()[0].startswith(reason)


def test_a_time_after_the_import_is_quarantined_not_stored(tmp_path, cloud):
    """No meter has measured the future: such a time is a misread format or zone (here an
    hourly 'yyyymmddhh' stamp read as Unix seconds, which lands in 2034)."""
    write(meter_frame(steps=3).assign(Time=["2024-03-20T00:00Z", "2024032014", "2024-03-20T00:30Z"]), tmp_path / "m.csv")
    result = import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    (reason,) = cloud.read_quarantine("meter-1")[s.REASON].tolist()
    assert reason.startswith("line 3: time 2034-02-20 07:06:54Z") and "is after the import (" in reason
    assert reason.endswith("expected a measured time (check --timezone and --timestamp-format)")


def test_values_that_are_not_numbers_are_named(tmp_path, cloud):
    raw = meter_frame(steps=3).astype({"pv_w": object})
    raw.loc[1, "pv_w"] = "n/v"
    write(raw, tmp_path / "m.csv")
    assert import_file(tmp_path / "m.csv", cloud, OPTIONS).rows_quarantined == 1
    assert cloud.read_quarantine("meter-1")[s.REASON].tolist() == ["line 3: pv_w 'n/v' is not a number"]


@pytest.mark.parametrize("count", ["1E20", "1E400", "-9.1e15"])
def test_a_count_too_large_to_be_whole_is_quarantined_and_the_rest_stored(tmp_path, cloud, count):
    raw = meter_frame(steps=3).assign(battery_cycles=1.0).astype({"battery_cycles": object})
    raw.loc[1, "battery_cycles"] = count
    write(raw, tmp_path / "m.csv")
    result = import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    assert "is not a whole number below" in cloud.read_quarantine("meter-1")[s.REASON].tolist()[0]


def test_times_whose_offsets_change_with_the_season_are_read(tmp_path, cloud):
    raw = meter_frame(steps=2).assign(Time=["2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00"])
    write(raw, tmp_path / "m.csv")
    import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert cloud.read_readings("meter-1")[dd.TS].tolist() == list(pd.to_datetime(["2024-03-31T00:00Z", "2024-03-31T01:00Z"]))


def test_local_time_across_both_dst_changes_imports_completely(tmp_path, cloud):
    instants = pd.date_range("2024-03-30 12:00", periods=4 * 36, freq="15min", tz="UTC").append(
        pd.date_range("2024-10-26 12:00", periods=4 * 36, freq="15min", tz="UTC"))
    raw = meter_frame(steps=len(instants)).assign(Time=instants.tz_convert("Europe/Berlin").strftime("%Y-%m-%d %H:%M"))
    write(raw, tmp_path / "m.csv")
    result = import_file(tmp_path / "m.csv", cloud, OPTIONS)
    assert (result.rows_synced, result.rows_quarantined) == (len(instants), 0)
    assert cloud.read_readings("meter-1")[dd.TS].tolist() == list(instants)


@pytest.mark.parametrize("name", ["Date/Time", "TIMESTAMP", "period_end"])
def test_a_time_column_under_a_common_name_is_found(tmp_path, cloud, name):
    write(meter_frame(steps=4).rename(columns={"Time": name}), tmp_path / "m.csv")
    options = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W")
    assert import_file(tmp_path / "m.csv", cloud, options).rows_synced == 4


@pytest.mark.parametrize("units, factor", [("Wh", 4 / 1000), ("kWh", 4.0)])
def test_energy_per_reading_is_the_mean_power_of_its_interval(tmp_path, cloud, units, factor):
    raw = meter_frame(steps=8)  # 15-minute readings: kW = kWh per reading x 4
    raw["pv_w"] = raw["pv_w"] / (1000 if units == "kWh" else 1)
    write(raw, tmp_path / "m.csv")
    options = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units=units, timestamp_column="Time")
    result = import_file(tmp_path / "m.csv", cloud, options)
    back = cloud.read_readings("meter-1")[dd.SOLAR_KW].dropna()
    assert back.tolist() == pytest.approx((raw["pv_w"] * factor).tolist()) and result.rows_synced == 8
    assert result.interval == pd.Timedelta(minutes=15)


@pytest.mark.parametrize("units, scale", [("kWh-total", 1.0), ("Wh-total", 1000.0)])
@pytest.mark.parametrize("batch_size", [3, 10_000])
def test_a_meter_total_is_the_mean_power_since_the_total_before_it(tmp_path, cloud, units, scale, batch_size):
    """Running totals of a PV and a load register every 15 min: each later total gives the
    mean kW since the one before (kWh x 4), across chunks; the first, one after a gap and one
    after a reset give none and are quarantined with why."""
    times = pd.date_range("2024-03-20 00:00", periods=10, freq="15min").delete(6)  # 01:30 missing: a gap
    pv_kwh = np.array([100.0, 100.5, 101.25, 102.0, 102.0, 102.5, 103.5, 104.0, 104.25])
    load_kwh = np.array([50.0, 50.25, 50.5, 51.0, 51.5, 52.0, 52.25, 0.5, 0.75])  # reset to 0 before 02:00
    raw = pd.DataFrame({"Time": times.strftime("%Y-%m-%d %H:%M"), "pv_total": pv_kwh * scale,
                        "load_total": load_kwh * scale})
    write(raw, tmp_path / "m.csv")
    options = ImportOptions("meter-1", {"pv_total": dd.SOLAR_KW, "load_total": dd.LOAD_TOTAL}, units=units,
                            batch_size=batch_size)
    result = import_file(tmp_path / "m.csv", cloud, options)
    stored = cloud.read_readings("meter-1")
    assert stored[dd.TS].dt.strftime("%H:%M").tolist() == ["00:15", "00:30", "00:45", "01:00", "01:15", "02:15"]
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([2.0, 3.0, 3.0, 0.0, 2.0, 1.0])
    assert stored[dd.LOAD_TOTAL].tolist() == pytest.approx([1.0, 1.0, 2.0, 2.0, 2.0, 1.0])
    assert (result.rows_synced, result.rows_quarantined) == (6, 3)
    reasons = cloud.read_quarantine("meter-1").sort_values(dd.TS)[s.REASON].tolist()
    assert reasons == [
        "line 2: pv_total is a meter total; its first reading has none before it to count from; "
        "load_total is a meter total; its first reading has none before it to count from",
        "line 8: pv_total is a meter total 30 min after the one before it (a gap); when in the gap its energy "
        "flowed is unknown; load_total is a meter total 30 min after the one before it (a gap); when in the gap "
        "its energy flowed is unknown",
        "line 9: load_total meter total fell from 52.25 to 0.5 (a reset or a new meter); counting starts again from it"
        .replace("52.25", f"{52.25 * scale:g}").replace("0.5 (", f"{0.5 * scale:g} ("),
    ]


@pytest.mark.parametrize("batch_size", [4, 10_000])
def test_a_file_imported_again_with_its_units_corrected_leaves_no_refusal_of_a_stored_reading(tmp_path, cloud,
                                                                                                  capsys, batch_size):
    """A 12 kWp roof's watts read as kW: the midday rows are refused as PV above 10,000 kW.
    Imported again with ``--units W``, every row is stored and its refusals leave the
    quarantine; a refusal of another file, or of this file at a time it still refuses,
    stays."""
    raw = meter_frame(steps=12)
    raw["pv_w"] = [0, 0, 3000, 8000, 11000, 12000, 11500, 9000, 4000, 0, 0, 0]
    raw.loc[10, "load_w"] = -5.0  # still refused: a load below 0
    write(raw, tmp_path / "m.csv")
    other = meter_frame(steps=12).assign(Time=lambda f: (pd.to_datetime(f["Time"]) + pd.Timedelta(days=1))
                                         .dt.strftime("%Y-%m-%d %H:%M:%S"))  # the next day's download
    other.loc[5, "load_w"] = -7.0
    write(other, tmp_path / "other.csv")
    as_kw = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW, "load_w": dd.LOAD_TOTAL}, units="kW",
                          timezone="Europe/Berlin", timestamp_column="Time", batch_size=batch_size)
    import_file(tmp_path / "other.csv", cloud, as_kw)
    first = import_file(tmp_path / "m.csv", cloud, as_kw)
    assert (first.rows_quarantined, first.released) == (4, 0)  # 11000, 12000, 11500 kW and the negative load
    again = import_file(tmp_path / "m.csv", cloud, dataclasses.replace(as_kw, units="W"))
    assert (again.rows_synced, again.rows_quarantined, again.released) == (11, 1, 3)
    held = cloud.read_quarantine("meter-1")
    assert sorted(zip(held[s.SOURCE], held[s.REASON].str.extract(r"^line (\d+)")[0].astype(int))) == [
        ("import:m.csv", 12), ("import:other.csv", 7)]
    stored = cloud.read_readings("meter-1", stop=pd.Timestamp("2024-03-21", tz="Europe/Berlin"))
    assert stored[dd.SOLAR_KW].max() == pytest.approx(12.0)
    print_import(again, as_kw)
    assert ("  quarantine: 3 rows an earlier import of this file refused are stored now and left the quarantine"
            in capsys.readouterr().out.splitlines())


def test_another_file_of_the_same_name_leaves_its_namesake_s_refusals(tmp_path, cloud, capsys):
    """An inverter's export.csv, its watts read as kW, refused at midday; then a meter's
    export.csv, its load at the same times: the PV refused is not stored by it, so its
    refusals stay."""
    (tmp_path / "inverter").mkdir(), (tmp_path / "meter").mkdir()
    raw = meter_frame(steps=12)
    raw["pv_w"] = [0, 0, 3000, 8000, 11000, 12000, 11500, 9000, 4000, 0, 0, 0]
    raw[["Time", "pv_w"]].to_csv(tmp_path / "inverter" / "export.csv", index=False)
    raw[["Time", "load_w"]].to_csv(tmp_path / "meter" / "export.csv", index=False)
    kw = {"timezone": "Europe/Berlin", "timestamp_column": "Time", "units": "kW"}
    first = import_file(tmp_path / "inverter" / "export.csv", cloud, ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, **kw))
    second = import_file(tmp_path / "meter" / "export.csv", cloud, ImportOptions("meter-1", {"load_w": dd.LOAD_TOTAL}, **kw))
    assert (first.rows_quarantined, second.released) == (3, 0)
    assert len(cloud.read_quarantine("meter-1")) == 3


@pytest.mark.parametrize("batch_size", [3, 10_000])
def test_bad_rows_after_the_first_batch_are_quarantined(tmp_path, cloud, batch_size):
    raw = meter_frame(steps=20)
    raw.loc[[4, 11, 19], "pv_w"] = -1000.0
    write(raw, tmp_path / "m.csv")
    options = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W", timestamp_column="Time", batch_size=batch_size)
    result = import_file(tmp_path / "m.csv", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (17, 3)
    assert [r.split(":")[0] for r in cloud.read_quarantine("meter-1")[s.REASON]] == ["line 6", "line 13", "line 21"]


@pytest.mark.parametrize("error", [StoreError("cloud store refused the write"), KeyError("boom")])
def test_a_failure_mid_file_finishes_the_run_as_failed(tmp_path, cloud, error, monkeypatch):
    write(meter_frame(steps=12), tmp_path / "m.csv")
    calls, upsert = [], cloud.upsert_readings

    def fails_second_time(frame, fields=None):
        calls.append(len(frame))
        if len(calls) == 2:
            raise error
        return upsert(frame, fields)

    monkeypatch.setattr(cloud, "upsert_readings", fails_second_time)
    options = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W", timestamp_column="Time", batch_size=5)
    with pytest.raises(type(error)):
        import_file(tmp_path / "m.csv", cloud, options)
    run = cloud.last_run("cloud_import")
    assert (run[s.STATUS], run[s.ROWS]) == ("failed", 5)
    assert run[s.ERROR] in ("cloud store refused the write", "KeyError: 'boom'")
    assert cloud.count_readings("meter-1") == 5


def test_cli_reports_plausibility_and_usage_errors_in_one_line(tmp_path, capsys):
    ts = pd.date_range("2024-06-01", periods=96 * 4, freq="15min", tz="UTC")
    noon_utc = 12 - 13.4 / 15 + 1.0  # logged an hour late
    pv = 3000 * np.clip(np.cos((ts.hour + ts.minute / 60 - noon_utc) * np.pi / 12), 0, None) ** 2
    pd.DataFrame({"Timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "pv_w": pv}).to_csv(tmp_path / "m.csv", index=False)
    base = ["--import", str(tmp_path / "m.csv"), "--device-id", "meter-9", "--column-map", "pv_w=solar_generation_kw",
            "--units", "W", "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, [*base, "--longitude", "13.4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "imported 384 readings of meter-9 (0 quarantined)"
    assert out[1].startswith("  clock: warning: PV peaks 1 h after solar noon in Jun: likely clock shift of +1 h")
    assert run_cli(run_cloud_sync.main, [*base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rows_stored"], report["interval_minutes"]) == (384, 15.0)
    assert (report["timezone"], report["timezone_from"]) == (None, None)  # its times carry their offset (Z)
    wall = tmp_path / "wall.csv"
    wall.write_text("Timestamp,pv_w\n2024-06-01 12:00,100\n2024-06-01 12:15,120\n")
    assert run_cli(run_cloud_sync.main, ["--import", str(wall), "--device-id", "meter-9", "--column-map",
                                         "pv_w=solar_generation_kw", "--units", "W", "--cloud-db",
                                         str(tmp_path / "cloud.db"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["timezone"], report["timezone_from"]) == ("UTC", "no --timezone and no declared site")
    assert report["checks"][0] == {"check": "clock", "status": "skipped",
                                   "message": "site longitude unknown (no sites row; --longitude DEG)"}
    assert run_cli(run_cloud_sync.main, [*base, "--timestamp-column", "When"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {tmp_path / 'm.csv'}: --timestamp-column 'When' not found; columns: ['Timestamp', 'pv_w']"


@pytest.mark.slow
def test_a_million_rows_with_bad_rows_spread_through_store_every_good_row(tmp_path, cloud):
    rows = 1_000_000
    ts = pd.date_range("2020-01-01", periods=rows, freq="1min", tz="UTC")
    pv = np.round(np.random.default_rng(5).uniform(0, 4000, rows), 1).astype(object)
    times = ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(dtype=object)
    bad_values, bad_times = np.arange(777, rows, 9_973), np.arange(4_242, rows, 31_337)
    pv[bad_values] = -12_500.0  # a sign turned; a few watts below 0 would be a night draw
    times[bad_times] = "not a time"
    pd.DataFrame({"Timestamp": times, "pv_w": pv}).to_csv(tmp_path / "big.csv", index=False)
    options = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W")
    result = import_file(tmp_path / "big.csv", cloud, options)
    bad = len(set(bad_values) | set(bad_times))
    assert (result.rows_synced, result.rows_quarantined) == (rows - bad, bad)
    assert cloud.count_readings("meter-1") == rows - bad
    assert len(cloud.read_quarantine("meter-1")) == bad
    assert cloud.last_run("cloud_import")[s.STATUS] == "ok"


def test_a_terminated_import_is_recorded_as_failed_not_left_running(tmp_path):
    """SIGTERM (``timeout``, a service stop) unwinds the import as Ctrl-C does, so its run is
    closed with the reason; a run left ``running`` would read as under way for ever."""
    rows = 400_000
    ts = pd.date_range("2020-01-01", periods=rows, freq="1min", tz="UTC")
    pd.DataFrame({"Timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "pv_w": np.zeros(rows)}).to_csv(tmp_path / "big.csv", index=False)
    db = tmp_path / "cloud.db"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_cloud_sync.py"), "--import", str(tmp_path / "big.csv"),
                             "--device-id", "meter-1", "--column-map", "pv_w=solar_generation_kw", "--units", "W",
                             "--cloud-db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def started() -> bool:  # read-only: this test must not make the store's tables itself
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                return bool(con.execute("SELECT 1 FROM pipeline_runs WHERE status = 'running'").fetchall())
        except sqlite3.Error:
            return False

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not started():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "terminated"
    run = SQLiteCloudStore(db).last_run("cloud_import")
    assert (run[s.STATUS], run[s.ERROR]) == ("failed", "Terminated: stopped by SIGTERM")


def test_a_mapped_column_takes_its_field_from_a_column_under_the_fields_own_name(tmp_path, cloud):
    """Columns mapped to one field are summed; a column that merely bears the field's name
    gives way to the one the map names, and is reported as not imported."""
    (tmp_path / "m.csv").write_text("ts,solar_generation_kw,pv_w\n2024-07-01T12:00Z,9,1500\n")
    options = ImportOptions("meter-1", {"pv_w": dd.SOLAR_KW}, units="W")
    result = import_file(tmp_path / "m.csv", cloud, options)
    assert cloud.read_readings("meter-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.5])
    assert result.columns_not_imported == [dd.SOLAR_KW]


#: A Shelly EM's energy data download (the device's web page, "Download data": one row a
#: minute, ``Date/time UTC,Active energy Wh,Returned energy Wh,Min V,Max V``), its column
#: renamed as other loggers name a UTC clock.
SHELLY_UTC = ("{name},Active energy Wh,Returned energy Wh,Min V,Max V\n"
              "2024-07-03 10:00,5.2,0.0,229.1,231.0\n2024-07-03 10:01,5.0,0.0,229.3,231.2\n"
              "2024-07-03 10:02,0.0,12.4,229.0,232.1\n")


def test_a_time_column_named_utc_is_read_in_utc_not_the_sites_zone(tmp_path, capsys):
    """The declared site's zone is for a logger keeping the home's clock; a column that says
    UTC would have every reading moved by the site's offset. A --timezone of another offset
    contradicts the file and is refused in one line."""
    (tmp_path / "em.csv").write_text(SHELLY_UTC.format(name="timestamp_utc"))
    site = json.loads((ROOT / "examples" / "site.json").read_text())
    (tmp_path / "site.json").write_text(json.dumps(site))
    db = str(tmp_path / "cloud.db")
    base = ["--import", str(tmp_path / "em.csv"), "--units", "Wh", "--cloud-db", db,
            "--column-map", "Active energy Wh=net_grid_flow_kw,Returned energy Wh=-net_grid_flow_kw"]
    assert run_cli(run_cloud_sync.main, [*base, "--site", str(tmp_path / "site.json")]) == 0
    assert ("  times: wall-clock times read in UTC (the name of its time column, timestamp_utc)"
            in capsys.readouterr().out.splitlines())
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings(site["device_id"])
    assert stored[dd.TS].tolist() == [pd.Timestamp(f"2024-07-03 10:0{m}", tz="UTC") for m in range(3)]
    assert stored[dd.NET_GRID_FLOW].tolist() == pytest.approx([0.312, 0.3, -0.744])

    assert run_cli(run_cloud_sync.main, [*base, "--device-id", "em-2", "--timezone", "Europe/Berlin"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'em.csv'}: the time column 'timestamp_utc' says its "
                                               "times are UTC, but --timezone Europe/Berlin; expected --timezone UTC or none")
    assert run_cli(run_cloud_sync.main, [*base, "--device-id", "em-2", "--timezone", "Africa/Abidjan"]) == 0


@pytest.mark.parametrize(("name", "utc"), [("timestamp_utc", True), ("Date/time UTC", True), ("UTC", True),
                                           ("Time (UTC+1)", False), ("Time (UTC -05:00)", False), ("Zeit", False),
                                           ("Computed", False)])
def test_only_a_name_that_says_utc_and_no_offset_from_it_names_utc(name, utc):
    assert names_utc((name,)) is utc
