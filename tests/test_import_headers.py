"""Meter files whose header is more than one line: a preamble above the names, a units row
below them, SMA's channel rows; the header's units and time format read where the command
line does not give them."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.file_headers import find_header, strftime_of, unique_names
from cloud.sync.importer import ImportOptions, import_file
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.errors import UsageError

#: Sunny Explorer's CSV layout, as SBFspot writes it for a day's 5-minute readings of two
#: inverters (SBFspot/CSVexport.cpp, ExportDayDataToCSV: ``sep=``, the ``Version CSV1``
#: line, a blank line, one row each of device names, types and serials, the channels'
#: names, their kinds, and the time format with each channel's unit), German locale:
#: decimal commas, day-first times, local clock time.
SMA_DAY = "\r\n".join([
    "sep=;",
    "Version CSV1|Tool SE|Linebreaks CR/LF|Delimiter semicolon|Decimalpoint comma|Precision 3",
    "",
    ";SN: 2100070361;SN: 2100070361;SN: 2100070559;SN: 2100070559",
    ";SB 4000TL-20;SB 4000TL-20;SB 4000TL-20;SB 4000TL-20",
    ";2100070361;2100070361;2100070559;2100070559",
    ";Gesamtertrag;Leistung;Gesamtertrag;Leistung",
    ";Counter;Analog;Counter;Analog",
    "dd.MM.yyyy HH:mm:ss;kWh;kW;kWh;kW",
    "28.06.2024 10:00:00; 70860,938; 2,000; 70212,784; 1,500",
    "28.06.2024 10:05:00; 70861,105; 2,100; 70212,909; 1,600",
    "28.06.2024 10:10:00; 70861,280; n/v; 70213,040; 1,550",
    "28.06.2024 10:15:00; 70861,430; 1,800; 70213,160; 1,450",
    "",
])
FIRST = "line 10"  # the first reading's line: nine header lines above it


@pytest.fixture()
def cloud(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        yield store


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8"])
def test_an_sma_export_is_read_by_its_names_units_kinds_and_time_format(tmp_path, cloud, encoding):
    """No --units and no --timestamp-format: a ``kW`` Analog channel is power, a ``kWh``
    Counter a running total, the times day-first as the units row says; a repeated channel
    name is told apart by its inverter's serial. Sunny Explorer writes UTF-16."""
    (tmp_path / "sma.csv").write_bytes(SMA_DAY.encode(encoding))
    power = "Leistung (SN: 2100070361)"
    options = ImportOptions("home-1", {power: dd.SOLAR_KW}, timezone="Europe/Berlin")
    result = import_file(tmp_path / "sma.csv", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    stored = cloud.read_readings("home-1")
    assert stored[dd.TS].tolist() == [pd.Timestamp(f"2024-06-28T08:{m}Z") for m in ("00", "05", "15")]
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([2.0, 2.1, 1.8])
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == [f"line 12: {power} ' n/v' is not a number"]
    assert "Leistung (SN: 2100070559)" in result.columns_not_imported

    total = "Gesamtertrag (SN: 2100070559)"
    result = import_file(tmp_path / "sma.csv", cloud, ImportOptions("home-2", {total: dd.SOLAR_KW},
                                                                    timezone="Europe/Berlin"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    stored = cloud.read_readings("home-2")
    # the energy since the total before, over five minutes
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([0.125 * 12, 0.131 * 12, 0.120 * 12])
    reason, = cloud.read_quarantine("home-2")[s.REASON]
    assert reason.startswith(f"{FIRST}: {total} is a meter total; its first reading")


def test_a_units_row_under_the_names_gives_each_column_its_unit(tmp_path, cloud):
    """``[dd.MM.yyyy HH:mm]``, ``[Wh]`` and ``[W]`` under the names: the times read in the
    row's format, ``[W]`` power; ``[Wh]`` without SMA's kinds row may be a reading's energy
    or a running total, so --units says which, and a total it is not is refused."""
    text = "Datum und Uhrzeit;PV;Netzbezug\n[dd.MM.yyyy HH:mm];[Wh];[W]\n" + "".join(
        f"25.03.2024 12:{m:02d};{500 + m};{300 + m}\n" for m in (0, 15, 30))
    (tmp_path / "portal.csv").write_text(text)
    mapping = {"PV": dd.SOLAR_KW, "Netzbezug": dd.LOAD_TOTAL}
    with pytest.raises(UsageError, match=r"column 'PV' is energy in Wh by the file's header, for solar_generation_kw; "
                                         r"expected --units Wh \(energy per reading\) or --units Wh-total"):
        import_file(tmp_path / "portal.csv", cloud, ImportOptions("home-1", mapping, timezone="Europe/Berlin"))
    with pytest.raises(UsageError, match=r"--units Wh but column 'Netzbezug' is in W by the file's header"):
        import_file(tmp_path / "portal.csv", cloud, ImportOptions("home-1", mapping, units="Wh", timezone="Europe/Berlin"))
    import_file(tmp_path / "portal.csv", cloud, ImportOptions("home-1", {"Netzbezug": dd.LOAD_TOTAL}, timezone="Europe/Berlin"))
    options = ImportOptions("home-1", {"PV": dd.SOLAR_KW}, units="Wh", timezone="Europe/Berlin")
    result = import_file(tmp_path / "portal.csv", cloud, options)
    assert result.rows_synced == 3
    stored = cloud.read_readings("home-1")
    assert stored[dd.TS].iloc[0] == pd.Timestamp("2024-03-25T11:00Z")
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([2.0, 2.06, 2.12])  # Wh per quarter hour x 4 / 1000
    assert stored[dd.LOAD_TOTAL].tolist() == pytest.approx([0.3, 0.315, 0.33])


def test_a_workbook_with_a_preamble_and_a_units_row_is_read_from_its_names(tmp_path, cloud):
    """Title rows above the names, a units row below them; a refused row is named by its
    sheet row. The sheet's date cells carry their own type."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Anlage: Mein Haus"])
    sheet.append(["Export vom 01.07.2024"])
    sheet.append([])
    sheet.append(["Zeitstempel", "PV-Erzeugung", "Temperatur"])
    sheet.append(["[dd.MM.yyyy HH:mm]", "[kWh]", "[°C]"])
    sheet.append([datetime(2024, 7, 1, 12, 0), 0.5, 21])
    sheet.append([datetime(2024, 7, 1, 12, 15), "n/v", 21])
    sheet.append([datetime(2024, 7, 1, 12, 30), 0.75, 22])
    book.save(tmp_path / "portal.xlsx")
    options = ImportOptions("home-1", {"PV-Erzeugung": dd.SOLAR_KW}, units="kWh", timezone="Europe/Berlin")
    result = import_file(tmp_path / "portal.xlsx", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    stored = cloud.read_readings("home-1")
    assert stored[dd.TS].tolist() == [pd.Timestamp("2024-07-01T10:00Z"), pd.Timestamp("2024-07-01T10:30Z")]
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([2.0, 3.0])
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["sheet row 7: PV-Erzeugung 'n/v' is not a number"]


def test_a_preamble_above_the_names_is_passed_over_and_lines_keep_their_numbers(tmp_path, cloud):
    text = ("Anlage: Mein Haus\nExport vom 01.07.2024;Zeitraum 1 Tag\n\n"
            "Zeitstempel;PV (W)\n2024-07-01 12:00;1200\n2024-07-01 12:15;n/v\n2024-07-01 12:30;1300\n")
    (tmp_path / "m.csv").write_text(text)
    options = ImportOptions("home-1", {"PV (W)": dd.SOLAR_KW}, units="W", timezone="UTC")
    result = import_file(tmp_path / "m.csv", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.2, 1.3])
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["line 6: PV (W) 'n/v' is not a number"]


def test_units_that_contradict_the_header_or_are_no_power_are_one_line(tmp_path, capsys):
    (tmp_path / "sma.csv").write_bytes(SMA_DAY.encode("utf-8"))
    base = ["--import", str(tmp_path / "sma.csv"), "--device-id", "home-1", "--timezone", "Europe/Berlin",
            "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, [*base, "--column-map", "Leistung (SN: 2100070361)=solar_generation_kw",
                                         "--units", "W"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'sma.csv'}: --units W but column 'Leistung (SN: 2100070361)' is in kW by the "
                   "file's header; expected them to agree"]
    (tmp_path / "m.csv").write_text("Zeit;Batterie\n[dd.MM.yyyy HH:mm];[%]\n01.07.2024 12:00;55\n")
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "m.csv"), "--device-id", "home-1",
                                         "--column-map", "Batterie=home_load_total_load_kw",
                                         "--cloud-db", str(tmp_path / "cloud.db")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'm.csv'}: column 'Batterie' is in % by the file's header; expected power or energy "
        "(W, kW, Wh, kWh) for home_load_total_load_kw")
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.read_readings("home-1").empty


def test_a_time_column_named_by_its_format_is_found_below_a_row_of_other_units():
    """SBFspot's spot files: a row of SMA's unit words (``Watt``, ``Amp``, ``Status``) above
    the names, whose time column is named by its format."""
    rows = [["Version CSV1|Tool SBFspot"], [], ["", "", "", "", "Watt", "Amp", "Status"],
            ["dd/MM/yyyy HH:mm:ss", "DeviceName", "DeviceType", "Serial", "PacTot", "Iac1", "Condition"],
            ["01/05/2016 10:00:00", "SN: 1", "SB 4000TL-20", "1", "3500", "15,2", "Ok"]]
    header = find_header(rows, None)
    assert (header.names_row, header.data_row, header.time_column, header.time_format) == (
        3, 4, "dd/MM/yyyy HH:mm:ss", "%d/%m/%Y %H:%M:%S")
    assert header.unit_of("PacTot") is None


def test_names_stay_unique_when_a_qualified_name_is_taken():
    header = find_header([["time", "PV", "PV", "PV (2)", ""], ["2024-07-01 12:00", "1", "2", "3", "4"]], None)
    assert header.columns == ["time", "PV", "PV.1", "PV (2)", "column 5"]
    header = find_header([["time", "PV", "PV", "PV.1"], ["2024-07-01 12:00", "1", "2", "3"]], None)
    assert header.columns == ["time", "PV", "PV.1", "PV.1.1"]


def test_a_plain_header_is_the_first_line_as_before():
    header = find_header([["ts", "solar_generation_kw"], ["2024-01-01T00:00Z", "1.5"]], None)
    assert (header.columns, header.names_row, header.data_row, header.units) == (
        ["ts", "solar_generation_kw"], 0, 1, {})


@pytest.mark.parametrize(("pattern", "expected"), [
    ("dd.MM.yyyy HH:mm:ss", "%d.%m.%Y %H:%M:%S"),
    ("dd/MM/yyyy", "%d/%m/%Y"),
    ("MM/dd/yyyy hh:mm tt", "%m/%d/%Y %I:%M %p"),
    ("yyyy-MM-dd'T'HH:mm", "%Y-%m-%dT%H:%M"),
    ("d.M.yy H:mm", "%d.%m.%y %H:%M"),
])
def test_a_header_time_format_becomes_a_strftime_pattern(pattern, expected):
    assert strftime_of(pattern) == expected
    when = datetime(2024, 7, 1, 13, 5)
    assert datetime.strptime(when.strftime(expected), expected).date() == when.date()


def test_an_import_without_a_file_header_unit_still_defaults_to_kw(tmp_path, cloud):
    pd.DataFrame({"ts": ["2024-01-01T10:00Z", "2024-01-01T10:15Z"], dd.SOLAR_KW: [1.5, 2.0]}).to_csv(
        tmp_path / "m.csv", index=False)
    import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1"))
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.5, 2.0])


def test_a_header_given_unit_for_a_counter_without_two_readings_is_refused(tmp_path, cloud):
    (tmp_path / "m.csv").write_text("Zeit;Zähler\n[dd.MM.yyyy HH:mm];[kWh]\n01.07.2024 12:00;55\n")
    with pytest.raises(UsageError, match=r"Zähler in kWh \(energy per reading\) needs at least two readings"):
        import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"Zähler": dd.SOLAR_KW}, units="kWh"))


CELLS = ["", "kW", "[Wh]", "Counter", "Analog", "dd.MM.yyyy HH:mm", "Zeit", "time", "PV", "PV", "12,5", "n/v",
         "SN: 1", "SN: 2", "%", "2024-07-01 12:00", "PV (1)", "column 2"]


@given(st.lists(st.lists(st.sampled_from(CELLS), max_size=5), max_size=12), st.sampled_from([None, "Zeit", "x"]))
@settings(max_examples=500, deadline=None)
def test_any_first_rows_give_a_header_below_its_names(rows, timestamp_column):
    """Whatever the first rows hold, the header names every cell of its names row once, and
    the readings start below it."""
    header = find_header(rows, timestamp_column)
    assert header.data_row > header.names_row
    assert len(set(header.columns)) == len(header.columns)
    if rows:
        assert len(header.columns) >= len(rows[header.names_row])
    assert header.time_column is None or header.time_column in header.columns


def test_two_columns_mapped_to_one_field_are_summed(tmp_path, cloud):
    """Both inverters of the SMA export make the home's PV; a row where one has no number
    is refused with that column named, and the sum is not stored for it."""
    (tmp_path / "sma.csv").write_bytes(SMA_DAY.encode("utf-8"))
    both = {"Leistung (SN: 2100070361)": dd.SOLAR_KW, "Leistung (SN: 2100070559)": dd.SOLAR_KW}
    result = import_file(tmp_path / "sma.csv", cloud, ImportOptions("home-1", both, timezone="Europe/Berlin"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([3.5, 3.7, 3.25])
    totals = {"Gesamtertrag (SN: 2100070361)": dd.SOLAR_KW, "Gesamtertrag (SN: 2100070559)": dd.SOLAR_KW}
    result = import_file(tmp_path / "sma.csv", cloud, ImportOptions("home-2", totals, timezone="Europe/Berlin"))
    assert cloud.read_readings("home-2")[dd.SOLAR_KW].tolist() == pytest.approx(
        [(0.167 + 0.125) * 12, (0.175 + 0.131) * 12, (0.150 + 0.120) * 12])
    reason, = cloud.read_quarantine("home-2")[s.REASON]
    assert reason == (f"{FIRST}: Gesamtertrag (SN: 2100070361) is a meter total; its first reading has none before it "
                      "to count from; Gesamtertrag (SN: 2100070559) is a meter total; its first reading has none before "
                      "it to count from")


def test_summed_columns_in_different_units_or_into_a_text_field_are_refused(tmp_path, cloud):
    (tmp_path / "sma.csv").write_bytes(SMA_DAY.encode("utf-8"))
    mixed = {"Leistung (SN: 2100070361)": dd.SOLAR_KW, "Gesamtertrag (SN: 2100070559)": dd.SOLAR_KW}
    with pytest.raises(UsageError, match=r"summed into solar_generation_kw are in kW, kWh-total; expected one unit"):
        import_file(tmp_path / "sma.csv", cloud, ImportOptions("home-1", mixed, timezone="Europe/Berlin"))
    pd.DataFrame({"ts": ["2024-01-01T10:00Z"], "a": ["peak"], "b": ["peak"]}).to_csv(tmp_path / "m.csv", index=False)
    text = {"a": dd.TOU_PERIOD, "b": dd.TOU_PERIOD}
    with pytest.raises(UsageError, match=r"columns \['a', 'b'\] are all mapped to grid_price_time_of_use_period; "
                                         r"expected one column"):
        import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", text))
    assert cloud.read_readings("home-1").empty


def test_a_windows_1252_export_reads_its_names_and_a_stray_byte_refuses_its_row_only(tmp_path, cloud):
    """Excel's "CSV" on a German Windows writes ``Zähler`` in Windows-1252; a byte that is
    no character further down a UTF-8 file spoils its cell, not the file."""
    text = "Zeitstempel;Erzeugung Zähler (W);Außentemperatur (°C)\n2024-07-01 12:00;1200;21\n2024-07-01 12:15;1300;22\n"
    (tmp_path / "excel.csv").write_bytes(text.encode("cp1252"))
    result = import_file(tmp_path / "excel.csv", cloud, ImportOptions(
        "home-1", {"Erzeugung Zähler (W)": dd.SOLAR_KW}, units="W", timezone="UTC"))
    assert result.rows_synced == 2
    assert result.columns_not_imported == ["Außentemperatur (°C)"]
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.2, 1.3])

    times = pd.date_range("2024-07-01", periods=4000, freq="1min", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")
    rows = "".join(f"{t},{k % 50}\n" for k, t in enumerate(times))
    assert len(rows) > 1 << 16  # the stray byte lies past what the encoding is told from
    body = ("ts,solar_generation_kw\n" + rows).encode() + b"2024-07-04T00:00Z,1\xe42\n2024-07-04T00:01Z,5\n"
    (tmp_path / "late.csv").write_bytes(body)
    result = import_file(tmp_path / "late.csv", cloud, ImportOptions("home-2", timezone="UTC"))
    assert (result.rows_synced, result.rows_quarantined) == (4001, 1)
    reason, = cloud.read_quarantine("home-2")[s.REASON]
    assert reason.startswith("line 4002: solar_generation_kw ") and reason.endswith(" is not a number")


def test_a_unit_closing_a_columns_name_is_read_where_it_can_be(tmp_path, cloud):
    """``PV (W)`` is power in W without --units; ``--units kW`` contradicts it; energy in a
    name (``(Wh)``) may be a reading's or a running total, so --units must say which."""
    text = "Date/Time,PV (W),Energy Produced (Wh)\n" + "".join(
        f"2024-07-01 12:{m:02d},{1000 + m},{250 + m}\n" for m in (0, 15, 30))
    (tmp_path / "m.csv").write_text(text)
    import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"PV (W)": dd.SOLAR_KW}, timezone="UTC"))
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.0, 1.015, 1.03])
    with pytest.raises(UsageError, match=r"--units kW but column 'PV \(W\)' is in W by its name; expected them to agree"):
        import_file(tmp_path / "m.csv", cloud, ImportOptions("home-2", {"PV (W)": dd.SOLAR_KW}, units="kW"))
    energy = {"Energy Produced (Wh)": dd.SOLAR_KW}
    with pytest.raises(UsageError, match=r"column 'Energy Produced \(Wh\)' is energy in Wh by its name, for "
                                         r"solar_generation_kw; expected --units Wh \(energy per reading\) or "
                                         r"--units Wh-total \(a meter's running total\)"):
        import_file(tmp_path / "m.csv", cloud, ImportOptions("home-2", energy))
    import_file(tmp_path / "m.csv", cloud, ImportOptions("home-2", energy, units="Wh", timezone="UTC"))
    assert cloud.read_readings("home-2")[dd.SOLAR_KW].tolist() == pytest.approx([1.0, 1.06, 1.12])


def test_a_semicolon_file_with_decimal_commas_keeps_its_delimiter(tmp_path, cloud):
    """The readings split as often at ``,`` as at ``;``: the names line, which holds no
    decimal comma, tells them apart."""
    text = "Zeit;PV;Last\n" + "".join(f"2024-03-20 00:{m:02d};1,{m:02d};2,50\n" for m in range(0, 60, 15))
    (tmp_path / "de.csv").write_text(text)
    options = ImportOptions("home-1", {"PV": dd.SOLAR_KW, "Last": dd.LOAD_TOTAL}, units="kW", timezone="UTC")
    assert import_file(tmp_path / "de.csv", cloud, options).rows_synced == 4
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.0, 1.15, 1.3, 1.45])


def test_a_repeated_name_keeps_pandas_names_and_its_unit(tmp_path, cloud):
    """Without a row that tells them apart, the first keeps the name and the next is
    ``name.1``; a unit closing the name still holds for both."""
    (tmp_path / "m.csv").write_text("time,PV (W),PV (W),pv,pv\n2024-07-01T12:00Z,1000,2000,5,6\n")
    both = {"PV (W)": dd.SOLAR_KW, "PV (W).1": dd.SOLAR_KW}
    import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", both))
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([3.0])
    import_file(tmp_path / "m.csv", cloud, ImportOptions("home-2", {"pv": dd.SOLAR_KW}))
    assert cloud.read_readings("home-2")[dd.SOLAR_KW].tolist() == pytest.approx([5.0])


def test_a_meter_total_under_an_energy_unit_imports_as_a_total_when_told(tmp_path, cloud):
    (tmp_path / "m.csv").write_text("Datum und Uhrzeit;Zählerstand\n[dd.MM.yyyy HH:mm];[kWh]\n"
                                    "01.07.2024 12:00;1000\n01.07.2024 12:15;1001\n01.07.2024 12:30;1002,5\n")
    options = ImportOptions("home-1", {"Zählerstand": dd.LOAD_TOTAL}, units="kWh-total", timezone="UTC")
    assert import_file(tmp_path / "m.csv", cloud, options).rows_synced == 2
    assert cloud.read_readings("home-1")[dd.LOAD_TOTAL].tolist() == pytest.approx([4.0, 6.0])


def test_the_headers_time_format_is_its_own_columns_only(tmp_path, cloud):
    (tmp_path / "m.csv").write_text("Zeit;UTC;PV\n[dd.MM.yyyy HH:mm];;[W]\n01.07.2024 14:00;2024-07-01T12:00Z;1500\n")
    options = ImportOptions("home-1", {"PV": dd.SOLAR_KW}, timestamp_column="UTC")
    import_file(tmp_path / "m.csv", cloud, options)
    assert cloud.read_readings("home-1")[dd.TS].tolist() == [pd.Timestamp("2024-07-01T12:00Z")]


def test_an_export_date_in_the_preamble_is_no_names_row(tmp_path, cloud):
    (tmp_path / "m.csv").write_text("Anlage;Mein Haus\nDatum;01.07.2024\n\nZeitstempel;PV (W);Last (W)\n"
                                    "2024-07-01 12:00;1200;300\n2024-07-01 12:15;1300;400\n")
    result = import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"PV (W)": dd.SOLAR_KW}, timezone="UTC"))
    assert result.rows_synced == 2 and result.columns_not_imported == ["Last (W)"]


def test_month_and_weekday_names_in_a_time_format_read(tmp_path, cloud):
    (tmp_path / "m.csv").write_text("Time;PV\n[ddd dd MMM yyyy HH:mm];[kW]\nMon 01 Jul 2024 12:00;1,5\n")
    import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"PV": dd.SOLAR_KW}, timezone="UTC"))
    assert cloud.read_readings("home-1")[dd.TS].tolist() == [pd.Timestamp("2024-07-01T12:00Z")]


def test_a_time_format_that_is_no_pattern_or_a_huge_field_is_one_line(tmp_path, cloud):
    (tmp_path / "m.csv").write_text("ts,solar_generation_kw\n01.07.2024,1\n")
    with pytest.raises(UsageError, match=r"time format '%d%d' cannot be read \(.*\); expected a strftime pattern"):
        import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", timestamp_format="%d%d"))
    (tmp_path / "big.csv").write_text('ts,solar_generation_kw\n"' + "x" * 200_000 + '",1\n')
    with pytest.raises(UsageError, match=r"--import .*big.csv: cannot read \(field larger than field limit"):
        import_file(tmp_path / "big.csv", cloud, ImportOptions("home-1"))


def test_a_sheets_text_times_read_in_its_units_rows_format(tmp_path, cloud):
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["Zeitstempel", "PV"])
    book.active.append(["[dd.MM.yyyy HH:mm]", "[kW]"])
    book.active.append(["01.07.2024 12:00", 1.5])
    book.active.append([datetime(2024, 7, 1, 12, 15), 1.6])
    book.save(tmp_path / "m.xlsx")
    import_file(tmp_path / "m.xlsx", cloud, ImportOptions("home-1", {"PV": dd.SOLAR_KW}, timezone="UTC"))
    assert cloud.read_readings("home-1")[dd.TS].tolist() == [pd.Timestamp("2024-07-01T12:00Z"),
                                                             pd.Timestamp("2024-07-01T12:15Z")]


def test_a_short_windows_1252_file_is_told_by_a_last_byte(tmp_path, cloud):
    (tmp_path / "m.csv").write_bytes("ts,solar_generation_kw,Zähler\n2024-07-01T12:00Z,1,ä".encode("cp1252"))
    assert import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1")).columns_not_imported == ["Zähler"]


def test_blank_lines_among_the_readings_keep_the_lines_after_them_numbered_as_in_the_file(tmp_path, cloud):
    text = "ts,solar_generation_kw\n2024-07-01T12:00Z,1\n\n\n2024-07-01T12:15Z,n/v\n,\n2024-07-01T12:30Z,3\n\n"
    (tmp_path / "m.csv").write_text(text)
    result = import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1"))
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["line 5: solar_generation_kw 'n/v' is not a number"]


def test_times_that_label_interval_starts_are_stored_at_the_interval_ends(tmp_path, capsys):
    """A reading is the mean of the interval ending at its time; a supplier's export of
    half-hours by their start (``Consumption (kWh), Start, End``: End is taken) and a file
    whose only time column is a start are moved one interval later, and the report says so."""
    text = "Consumption (kWh),Start,End\n" + "".join(
        f"{0.2 + k / 10:.1f},2024-01-01T{k // 2:02d}:{30 * (k % 2):02d}:00+00:00,"
        f"2024-01-01T{(k + 1) // 2:02d}:{30 * ((k + 1) % 2):02d}:00+00:00\n" for k in range(4))
    (tmp_path / "supplier.csv").write_text(text)
    db = str(tmp_path / "cloud.db")

    def imported(name: str, device: str, *extra: str) -> int:
        return run_cli(run_cloud_sync.main, ["--import", str(tmp_path / name), "--device-id", device, "--cloud-db", db,
                                             "--units", "kWh", "--column-map", "Consumption (kWh)=home_load_total_load_kw",
                                             *extra])

    assert imported("supplier.csv", "home-1") == 0
    assert "labels each interval's start" not in capsys.readouterr().out
    (tmp_path / "starts.csv").write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in text.splitlines()))
    assert imported("starts.csv", "home-2") == 0
    assert ("  times: Start labels each interval's start; stored at its end, 30 min later, as readings are "
            "(--time-label end to keep them)") in capsys.readouterr().out.splitlines()
    assert imported("starts.csv", "home-3", "--time-label", "end") == 0
    with SQLiteCloudStore(db) as store:
        ends, moved, kept = (store.read_readings(d) for d in ("home-1", "home-2", "home-3"))
    assert ends[dd.TS].tolist() == moved[dd.TS].tolist() == [pd.Timestamp(f"2024-01-01T{t}Z")
                                                             for t in ("00:30", "01:00", "01:30", "02:00")]
    assert moved[dd.LOAD_TOTAL].tolist() == pytest.approx([0.4, 0.6, 0.8, 1.0])
    assert kept[dd.TS].iloc[0] == pd.Timestamp("2024-01-01T00:00Z")


def test_a_meter_total_under_a_start_label_is_refused(tmp_path, cloud):
    (tmp_path / "m.csv").write_text("period_start,reg\n2024-01-01T00:00Z,10\n2024-01-01T00:30Z,11\n")
    with pytest.raises(UsageError, match=r"the times label interval starts \(period_start\), but a meter total is "
                                         r"read at an instant, not over an interval; expected --time-label end"):
        import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"reg": dd.LOAD_TOTAL}, units="kWh-total"))


def test_a_units_row_with_a_unit_unknown_here_is_still_the_units_row(tmp_path, cloud):
    """``[Ah]`` and ``[-]`` beside ``[W]``: the row is units, not a reading to quarantine,
    and a power field mapped to the ``[Ah]`` column is refused by its unit."""
    (tmp_path / "m.csv").write_text("Zeit;PV;Ladung;Status\n[dd.MM.yyyy HH:mm];[W];[Ah];[-]\n"
                                    "01.07.2024 12:00;1500;20;ok\n01.07.2024 12:15;1600;21;ok\n")
    result = import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"PV": dd.SOLAR_KW}, timezone="UTC"))
    assert (result.rows_synced, result.rows_quarantined) == (2, 0)
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.5, 1.6])
    with pytest.raises(UsageError, match=r"column 'Ladung' is in Ah by the file's header; expected power or energy"):
        import_file(tmp_path / "m.csv", cloud, ImportOptions("home-2", {"Ladung": dd.SOLAR_KW}, timezone="UTC"))


def test_a_name_broken_across_lines_inside_quotes_reads_as_it_shows(tmp_path, cloud):
    """A spreadsheet's wrapped header cell (``"PV power⏎(W)"``) is one name with a space at the
    break, and a bad reading's line is the line an editor shows, the header's extra lines
    counted."""
    (tmp_path / "m.csv").write_text('"Time","PV power\n(W)","Load\n(W)"\n2024-06-01 00:15,0,450\n'
                                    "2024-06-01 00:30,x,520\n2024-06-01 00:45,0,610\n")
    options = ImportOptions("home-1", {"PV power (W)": dd.SOLAR_KW, "Load (W)": dd.LOAD_TOTAL})
    result = import_file(tmp_path / "m.csv", cloud, options)
    assert (result.rows_synced, result.rows_quarantined) == (2, 1)
    assert result.units_read == {"PV power (W)": "W by its name", "Load (W)": "W by its name"}
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["line 5: PV power (W) 'x' is not a number"]
    assert cloud.read_readings("home-1")[dd.LOAD_TOTAL].tolist() == pytest.approx([0.45, 0.61])


def test_names_are_made_unique_in_one_pass_over_a_row_of_hundreds_of_thousands_of_cells():
    """A logger's row of 200,000 unnamed cells (a run of commas) gets a name per cell; counting
    each name's repeats across the row took the import hours."""
    names = unique_names(["Time", "pv", "pv", *[""] * 200_000])
    assert names[:3] == ["Time", "pv", "pv.1"] and names[-1] == "column 200003" and len(set(names)) == len(names)


def test_portals_time_column_names_are_found_below_their_titles(tmp_path, cloud):
    """Huawei FusionSolar's report export (Report Management, a plant report exported as
    ``.xlsx``: a title row, then the names, its time column ``Statistical Period``) and a
    Shelly EM's energy download (``Date/time UTC,Active energy Wh,Returned energy Wh,Min
    V,Max V``) import without --timestamp-column."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Plant Report"])
    sheet.append(["Statistical Period", "Plant Name", "PV Yield (kWh)", "Consumption (kWh)", "Export (kWh)"])
    for minute, pv, load in ((0, 0.5, 0.2), (5, 0.6, 0.3), (10, 0.7, 0.25)):
        sheet.append([f"2024-07-03 10:{minute:02d}:00", "Home", pv, load, pv - load])
    book.save(tmp_path / "report.xlsx")
    options = ImportOptions("home-1", {"PV Yield (kWh)": dd.SOLAR_KW}, units="kWh", timezone="Asia/Shanghai")
    assert import_file(tmp_path / "report.xlsx", cloud, options).rows_synced == 3
    stored = cloud.read_readings("home-1")
    assert stored[dd.TS].tolist() == [pd.Timestamp(f"2024-07-03T02:{m}Z") for m in ("00", "05", "10")]
    assert stored[dd.SOLAR_KW].tolist() == pytest.approx([6.0, 7.2, 8.4])

    (tmp_path / "em.csv").write_text("Date/time UTC,Active energy Wh,Returned energy Wh,Min V,Max V\n"
                                     "2024-07-03 10:00,5.2,0.0,229.1,231.0\n2024-07-03 10:01,0.0,12.4,229.0,232.1\n")
    options = ImportOptions("home-2", {"Active energy Wh": dd.NET_GRID_FLOW, "Returned energy Wh": "-net_grid_flow_kw"},
                            units="Wh", timezone="UTC")
    assert import_file(tmp_path / "em.csv", cloud, options).rows_synced == 2
    assert cloud.read_readings("home-2")[dd.NET_GRID_FLOW].tolist() == pytest.approx([0.312, -0.744])


@pytest.mark.parametrize("suffix", ["csv", "xlsx", "date-and-time.csv"])
def test_spreadsheet_date_serials_are_read_as_wall_clock_times(tmp_path, cloud, suffix):
    """A date column formatted as a number in Excel holds day serials (``45476.4166666667``
    is 2024-07-03 10:00), in the sheet and in the CSV Excel saves from it, or a whole day's
    beside a time column; no strftime pattern reads them, so --timestamp-format could not help."""
    rows = [(45476.4166666667, 1.5), (45476.4270833333, 1.6), (45476.4375, 1.7)]
    if suffix == "csv":
        (tmp_path / "m.csv").write_text("Date,PV (kW)\n" + "".join(f"{t},{v}\n" for t, v in rows))
    elif suffix == "date-and-time.csv":
        (tmp_path / f"m.{suffix}").write_text("Date,Time,PV (kW)\n45476,10:00,1.5\n45476,10:15,1.6\n45476,10:30,1.7\n")
    else:
        from openpyxl import Workbook

        book = Workbook()
        book.active.append(["Date", "PV (kW)"])
        for row in rows:
            book.active.append(row)
        book.save(tmp_path / "m.xlsx")
    options = ImportOptions("home-1", {"PV (kW)": dd.SOLAR_KW}, timezone="Europe/Berlin")
    assert import_file(tmp_path / f"m.{suffix}", cloud, options).rows_synced == 3
    assert cloud.read_readings("home-1")[dd.TS].tolist() == [pd.Timestamp(f"2024-07-03T08:{m}Z") for m in ("00", "15", "30")]


def test_quoted_thousands_separators_are_read_unless_the_cells_use_decimal_commas(tmp_path, cloud):
    """A portal export (SolarEdge's ``Time,System Production (W)``) opened in Excel and saved
    as CSV keeps its number format's thousands separators, each such cell quoted: ``"1,234.5"``
    is 1234.5 W, not a row to quarantine (every PV reading above 1 kW was). Beside a decimal
    comma in the same column (``"0,5"``), ``"1,500"`` may be 1.5: no number, and quarantined."""
    (tmp_path / "se.csv").write_text('Time,System Production (W)\n2024-07-03 10:00,"1,234.5"\n'
                                     '2024-07-03 10:15,"2,001"\n2024-07-03 10:30,999\n2024-07-03 10:45,"-1,000"\n')
    options = ImportOptions("home-1", {"System Production (W)": dd.SOLAR_KW}, timezone="UTC")
    assert import_file(tmp_path / "se.csv", cloud, options).rows_quarantined == 1  # -1 kW is no PV
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.2345, 2.001, 0.999])

    (tmp_path / "mixed.csv").write_text('Time,PV (kW)\n2024-07-03 10:00,"0,5"\n2024-07-03 10:15,"1,500"\n'
                                        '2024-07-03 10:30,2\n')
    options = ImportOptions("home-2", {"PV (kW)": dd.SOLAR_KW}, timezone="UTC")
    assert import_file(tmp_path / "mixed.csv", cloud, options).rows_synced == 1
    assert cloud.read_quarantine("home-2")[s.REASON].tolist() == ["line 2: PV (kW) '0,5' is not a number",
                                                                  "line 3: PV (kW) '1,500' is not a number"]


@pytest.mark.parametrize("group", [" ", "\u00a0", "\u202f"])
def test_thousands_grouped_by_spaces_beside_a_decimal_comma_are_numbers(tmp_path, cloud, group):
    """A French portal's export saved from Excel (``Horodatage;Production (W)``) groups
    thousands with a space, a no-break space, or the narrow one newer Windows writes, as
    German ones do with a dot: a file of such readings is read with its decimal comma, and
    none of a kilowatt or more is quarantined as no number."""
    (tmp_path / "m.csv").write_text(f"Horodatage;Production (W)\n2024-07-03 10:00;1{group}234,5\n"
                                    f"2024-07-03 10:15;2{group}001,0\n", encoding="utf-8")
    options = ImportOptions("home-1", {"Production (W)": dd.SOLAR_KW}, timezone="Europe/Paris")
    assert import_file(tmp_path / "m.csv", cloud, options).rows_synced == 2
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.2345, 2.001])


@pytest.mark.parametrize("text", ["Time,Grid (kW)\n2024-07-03 10:00,\u22121.2\n2024-07-03 10:15,0.5\n",
                                  "Time;Grid (kW)\n2024-07-03 10:00;\u22121,2\n2024-07-03 10:15;0,5\n"])
def test_a_minus_sign_is_a_negative_number(tmp_path, cloud, text):
    """Windows under Swedish, Norwegian or Finnish regional settings writes negative numbers
    with the minus sign (U+2212), and Excel's CSV keeps it: a grid meter's export, negative,
    was quarantined as no number at every hour the PV exported."""
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    options = ImportOptions("home-1", {"Grid (kW)": dd.NET_GRID_FLOW}, timezone="Europe/Stockholm")
    assert import_file(tmp_path / "m.csv", cloud, options).rows_synced == 2
    assert cloud.read_readings("home-1")[dd.NET_GRID_FLOW].tolist() == pytest.approx([-1.2, 0.5])
