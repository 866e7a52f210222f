"""Utilities' interval downloads: a ``Key,Value`` preamble, a date column beside the time of
day each interval starts, energy per interval, and a units column in place of a unit in the
name."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.importer import ImportOptions, import_file, parse_column_map
from cloud.sync.timestamps import find_time_columns, labels_start
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.errors import UsageError

#: The layout of PG&E's Green Button "Download my data" CSV for electricity, as its users
#: quote it: four ``Key,Value`` lines about the account, a blank line, then ``TYPE,DATE,
#: START TIME,END TIME,USAGE (kWh),COST,NOTES`` with local clock times, each row's END TIME
#: the last minute of its interval.
PREAMBLE = ["Name,JANE DOE", 'Address,"123 EXAMPLE ST, ANYTOWN CA 94000"', "Account Number,1234567890",
            "Service,Service 1", ""]


def green_button(start: str, periods: int, minutes: int = 15, names: str = "USAGE (kWh),COST,NOTES",
                 value=lambda k: f"{0.1 + k % 7 / 20:.2f}") -> str:
    rows = [*PREAMBLE, f"TYPE,DATE,START TIME,END TIME,{names}"]
    first = datetime.fromisoformat(start)
    for k in range(periods):
        at = first + timedelta(minutes=minutes * k)
        end = at + timedelta(minutes=minutes - 1)
        rows.append(f"Electric usage,{at:%Y-%m-%d},{at:%H:%M},{end:%H:%M},{value(k)},$0.03,")
    return "\n".join(rows) + "\n"


@pytest.fixture()
def cloud(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        yield store


@pytest.mark.parametrize("columns,expected", [
    (["TYPE", "DATE", "START TIME", "END TIME", "USAGE (kWh)"], ("DATE", "START TIME")),
    (["Start Date", "Start Time", "End Date", "End Time", "kWh"], ("Start Date", "Start Time")),
    (["Datum", "Von", "Bis", "Verbrauch (kWh)"], ("Datum", "Von")),
    (["Date", "Time", "Start Time", "kW"], ("Date", "Time")),  # a time of day that says nothing of intervals
    (["date", "start_time", "period_end", "kWh"], ("period_end",)),  # a whole time is taken first
])
def test_a_date_beside_the_time_each_interval_starts_is_the_time(columns, expected):
    assert find_time_columns(columns, None, "f.csv") == expected
    assert labels_start(expected) == (expected[-1] not in ("Time", "period_end"))


def test_a_green_button_download_imports_as_the_house_load_at_each_interval_s_end(tmp_path, capsys):
    """The preamble is passed over, DATE and START TIME make each interval's start (END TIME,
    its last minute, is not a time to store), the start moves to the interval's end, and the
    kWh of each quarter hour become its mean kW."""
    (tmp_path / "usage.csv").write_text(green_button("2024-06-01T00:00", 8))
    db = str(tmp_path / "cloud.db")
    code = run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "usage.csv"), "--device-id", "home-1",
                                         "--cloud-db", db, "--timezone", "America/Los_Angeles", "--units", "kWh",
                                         "--column-map", "USAGE (kWh)=home_load_total_load_kw"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "imported 8 readings of home-1 (0 quarantined)" in out
    assert "  times: DATE + START TIME labels each interval's start; stored at its end, 15 min later" in out
    assert "columns not imported (no reading field; --column-map FILE_COLUMN=field): COST, NOTES, TYPE" in out
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings("home-1")
    assert stored[dd.TS].tolist() == list(pd.date_range("2024-06-01T07:15Z", periods=8, freq="15min", unit="us"))
    assert stored[dd.LOAD_TOTAL].tolist() == pytest.approx([4 * (0.1 + k % 7 / 20) for k in range(8)])


def test_the_download_s_clock_changes_are_read_as_the_utility_writes_them(tmp_path, cloud):
    """Spring: the hour the clock skips is labelled ``02:00``, which no clock shows, and is
    quarantined, not guessed. Autumn: one ``01:00`` for the two hours the clock shows it is
    read as the first; the second is a gap."""
    (tmp_path / "spring.csv").write_text(green_button("2024-03-10T00:00", 4, minutes=60))
    result = import_file(tmp_path / "spring.csv", cloud, ImportOptions("home-1", {"USAGE (kWh)": dd.LOAD_TOTAL},
                                                                       units="kWh", timezone="America/Los_Angeles"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    reason, = cloud.read_quarantine("home-1")[s.REASON]
    assert reason.startswith("line 9: ") and "does not exist in America/Los_Angeles" in reason
    assert result.written_once == []  # a skipped hour is no repeated one

    (tmp_path / "autumn.csv").write_text(green_button("2024-11-03T00:00", 4, minutes=60))
    result = import_file(tmp_path / "autumn.csv", cloud, ImportOptions("home-2", {"USAGE (kWh)": dd.LOAD_TOTAL},
                                                                       units="kWh", timezone="America/Los_Angeles"))
    assert (result.rows_synced, result.rows_quarantined) == (4, 0)
    assert cloud.read_readings("home-2")[dd.TS].tolist() == [pd.Timestamp(f"2024-11-03T{t}Z")
                                                             for t in ("08:00", "09:00", "11:00", "12:00")]
    assert result.written_once == ["2024-11-03"] and result.as_dict()["repeated_hour_written_once"] == ["2024-11-03"]

    # the same day with the hour written for both passes: nothing to say, every hour stored
    lines = green_button("2024-11-03T00:00", 2, minutes=60).splitlines()
    (tmp_path / "both.csv").write_text("\n".join([*lines, lines[-1].replace("0.15", "0.20"),
                                                  lines[-1].replace("01:00,01:59", "02:00,02:59")]) + "\n")
    result = import_file(tmp_path / "both.csv", cloud, ImportOptions("home-3", {"USAGE (kWh)": dd.LOAD_TOTAL},
                                                                     units="kWh", timezone="America/Los_Angeles"))
    assert result.written_once == [] and (result.rows_synced, result.rows_quarantined) == (4, 0)
    assert cloud.read_readings("home-3")[dd.TS].tolist() == [pd.Timestamp(f"2024-11-03T{t}Z")
                                                             for t in ("08:00", "09:00", "10:00", "11:00")]


def test_a_units_column_gives_the_unit_of_the_column_before_it(tmp_path, cloud):
    """``USAGE,UNITS`` with ``kWh`` in each row: the energy is not read as kW; it needs
    ``--units kWh`` (a reading's) or ``kWh-total`` as energy named anywhere does, and a row
    in another unit is quarantined, not summed into the series."""
    value = iter(["0.10", "0.15", "0.20", "0.25"])
    text = green_button("2024-06-01T00:00", 4, names="USAGE,UNITS,COST,NOTES", value=lambda k: f"{next(value)},kWh")
    (tmp_path / "usage.csv").write_text(text.replace("0.25,kWh", "0.25,therms"))
    mapped = {"USAGE": dd.LOAD_TOTAL}
    with pytest.raises(UsageError, match=r"column 'USAGE' is energy in kWh by its UNITS column, for "
                                         r"home_load_total_load_kw; expected --units kWh \(energy per reading\)"):
        import_file(tmp_path / "usage.csv", cloud, ImportOptions("home-1", mapped, timezone="America/Los_Angeles"))
    with pytest.raises(UsageError, match=r"--units W but column 'USAGE' is in kWh by its UNITS column"):
        import_file(tmp_path / "usage.csv", cloud, ImportOptions("home-1", mapped, units="W"))
    result = import_file(tmp_path / "usage.csv", cloud, ImportOptions("home-1", mapped, units="kWh",
                                                                      timezone="America/Los_Angeles"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    assert "UNITS" not in result.columns_not_imported
    assert cloud.read_readings("home-1")[dd.LOAD_TOTAL].tolist() == pytest.approx([0.4, 0.6, 0.8])
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == [
        "line 10: UNITS 'therms' is not kWh, the unit of USAGE in the first reading"]


def test_a_net_metered_download_s_export_counts_against_its_import(tmp_path, capsys):
    """``IMPORT (kWh),EXPORT (kWh)`` (a home with PV under net metering): mapped as
    ``EXPORT (kWh)=-net_grid_flow_kw`` the export is taken from the import, so the grid flow
    is negative while the home exports."""
    flows = [(0.30, 0.0), (0.10, 0.25), (0.0, 0.50), (0.20, 0.05)]
    text = green_button("2024-06-01T12:00", 4, names="IMPORT (kWh),EXPORT (kWh),COST,NOTES",
                        value=lambda k: f"{flows[k][0]:.2f},{flows[k][1]:.2f}")
    (tmp_path / "usage.csv").write_text(text)
    db = str(tmp_path / "cloud.db")
    code = run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "usage.csv"), "--device-id", "home-1", "--cloud-db",
                                         db, "--timezone", "America/Los_Angeles", "--units", "kWh", "--column-map",
                                         "IMPORT (kWh)=net_grid_flow_kw, EXPORT (kWh)=-net_grid_flow_kw"])
    assert code == 0, capsys.readouterr().err
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings("home-1")
    assert stored[dd.NET_GRID_FLOW].tolist() == pytest.approx([4 * (i - e) for i, e in flows])


def test_a_meter_s_import_and_export_registers_each_count_on_their_own(tmp_path, cloud):
    """Two running totals (OBIS 1.8.0 and 2.8.0): each register's energy since its total
    before, export taken from import. Their difference falls while the home exports, which
    is no reset: only a register that falls is."""
    text = ("Zeit;1.8.0 (kWh);2.8.0 (kWh)\n01.07.2024 12:00;100,0;50,0\n01.07.2024 12:15;100,1;50,4\n"
            "01.07.2024 12:30;100,3;50,4\n01.07.2024 12:45;100,3;50,0\n01.07.2024 13:00;100,4;50,2\n")
    (tmp_path / "meter.csv").write_text(text)
    mapped = {"1.8.0 (kWh)": dd.NET_GRID_FLOW, "2.8.0 (kWh)": f"-{dd.NET_GRID_FLOW}"}
    result = import_file(tmp_path / "meter.csv", cloud, ImportOptions("home-1", mapped, units="kWh-total",
                                                                      timestamp_format="%d.%m.%Y %H:%M"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 2)
    stored = cloud.read_readings("home-1")
    assert stored[dd.NET_GRID_FLOW].tolist() == pytest.approx([4 * (0.1 - 0.4), 4 * 0.2, 4 * (0.1 - 0.2)])
    assert cloud.read_quarantine("home-1")[s.REASON].tolist()[1] == (
        "line 5: 2.8.0 (kWh) meter total fell from 50.4 to 50 (a reset or a new meter); counting starts again from it")


def test_an_entity_mapped_negatively_is_taken_from_its_field(tmp_path, cloud):
    lines = ["entity_id,state,last_changed"] + [
        f"{entity},{state},2024-06-01T{clock}.000Z" for entity, state, clock in [
            ("sensor.grid_import", "800", "10:00:00"), ("sensor.grid_import", "0", "10:05:00"),
            ("sensor.grid_export", "0", "10:00:00"), ("sensor.grid_export", "1500", "10:05:00"),
            ("sensor.grid_import", "0", "10:15:00"), ("sensor.grid_export", "1500", "10:15:00")]]
    (tmp_path / "history.csv").write_text("\n".join(lines) + "\n")
    mapped = {"sensor.grid_import": dd.NET_GRID_FLOW, "sensor.grid_export": f"-{dd.NET_GRID_FLOW}"}
    import_file(tmp_path / "history.csv", cloud, ImportOptions("home-1", mapped, units="W"))
    stored = cloud.read_readings("home-1").set_index(dd.TS)[dd.NET_GRID_FLOW]
    assert stored.to_dict() == pytest.approx({pd.Timestamp(f"2024-06-01T10:{m}Z"): kw
                                              for m, kw in (("05", 0.8), ("10", -1.5), ("15", -1.5))})


@pytest.mark.parametrize("text,message", [
    ("a=-tou", r"'tou' is not a reading field"),
    (f"a=-{dd.TOU_PERIOD}", r"only a number field is counted negatively"),
])
def test_a_negative_mapping_names_a_number_field(text, message):
    with pytest.raises(UsageError, match=message):
        parse_column_map(text)


def test_a_units_column_is_one_only_when_it_names_units(tmp_path, cloud):
    """A ``Unit`` column of inverters' names is no units column: the unit closing the name
    holds. Units cells in another case, or blank, agree with the first reading's; a
    repeated ``UNITS`` column gives the column before it its own unit."""
    (tmp_path / "pv.csv").write_text("timestamp,PV power (kW),Unit\n2024-06-01T10:00Z,1.5,Inverter 1\n"
                                     "2024-06-01T10:15Z,1.6,Inverter 1\n")
    import_file(tmp_path / "pv.csv", cloud, ImportOptions("home-1", {"PV power (kW)": dd.SOLAR_KW}))
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].tolist() == pytest.approx([1.5, 1.6])

    text = green_button("2024-06-01T00:00", 3, names="IMPORT,UNITS,EXPORT,UNITS,COST,NOTES",
                        value=lambda k: f"0.{k + 1},{['kWh', 'KWH', ''][k]},{k + 1}00,Wh")
    (tmp_path / "usage.csv").write_text(text)
    both = {"IMPORT": dd.NET_GRID_FLOW, "EXPORT": f"-{dd.NET_GRID_FLOW}"}
    with pytest.raises(UsageError, match=r"--units kWh but column 'EXPORT' is in Wh by its UNITS.1 column"):
        import_file(tmp_path / "usage.csv", cloud, ImportOptions("home-2", both, units="kWh"))
    result = import_file(tmp_path / "usage.csv", cloud, ImportOptions("home-2", {"IMPORT": dd.LOAD_TOTAL}, units="kWh",
                                                                      timezone="America/Los_Angeles"))
    assert (result.rows_synced, result.rows_quarantined) == (3, 0)
    assert cloud.read_readings("home-2")[dd.LOAD_TOTAL].tolist() == pytest.approx([0.4, 0.8, 1.2])


def test_a_start_column_that_holds_the_date_as_well_is_read_alone(tmp_path, cloud):
    """``Date,Start,End`` where Start and End are whole times: Start is not joined to the
    date, and labels each interval's start."""
    (tmp_path / "m.csv").write_text("Date,Start,End,kWh\n" + "".join(
        f"2024-06-01,2024-06-01 10:{m:02d},2024-06-01 10:{m + 15:02d},0.25\n" for m in (0, 15, 30)))
    result = import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"kWh": dd.LOAD_TOTAL}, units="kWh"))
    assert result.moved == "Date + Start"
    assert cloud.read_readings("home-1")[dd.TS].tolist() == [pd.Timestamp(f"2024-06-01T10:{m}Z") for m in (15, 30, 45)]


@pytest.mark.parametrize("batch_size", [2, 10_000])
def test_a_time_repeated_in_a_later_chunk_is_quarantined_not_stored_over_the_first(tmp_path, cloud, batch_size):
    """A corrected reading further down a file repeats an earlier time: the first is kept and
    the repeat quarantined, wherever the chunks of a long file happen to split."""
    (tmp_path / "m.csv").write_text("ts,load\n2024-06-01T10:00Z,1\n2024-06-01T10:15Z,2\n2024-06-01T10:00Z,9\n"
                                    "2024-06-01T10:30Z,3\n")
    result = import_file(tmp_path / "m.csv", cloud, ImportOptions("home-1", {"load": dd.LOAD_TOTAL},
                                                                  batch_size=batch_size))
    assert (result.rows_synced, result.rows_quarantined) == (3, 1)
    assert cloud.read_readings("home-1")[dd.LOAD_TOTAL].tolist() == [1.0, 2.0, 3.0]
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["line 4: time 2024-06-01 10:00:00Z repeats an earlier row's"]


#: Enedis' load curve ("Mes données de consommation", courbe de charge) as its users' tools
#: parse it: one row per half hour, the identifier and the export's period in every row, a
#: ``Unité`` column (W) left of the time (``Horodate``, Paris wall clock, the interval's end)
#: and the value (``Valeur``).
ENEDIS_NAMES = ("Identifiant PRM;Date de début;Date de fin;Grandeur physique;Grandeur métier;Etape métier;Unité;"
                "Horodate;Valeur;Nature;Pas;Indice de vraisemblance;Etat complémentaire")


def enedis(values: list[int]) -> str:
    rows = [ENEDIS_NAMES]
    first = datetime(2023, 3, 13, 0, 30)
    for k, value in enumerate(values):
        rows.append(f"19125759625988;2023-03-13 00:00:00;2025-03-13 00:00:00;PA;CONS;BRUT;W;"
                    f"{first + timedelta(minutes=30 * k):%Y-%m-%d %H:%M:%S};{value};B;PT30M;0;0")
    return "\n".join(rows) + "\n"


def test_an_enedis_load_curve_is_read_in_watts_from_its_unit_column(tmp_path, cloud, capsys):
    """``Horodate`` is the time; the ``Unité`` column, though not beside ``Valeur``, gives it
    its unit (the column before it holds no number; ``Valeur`` is the first after it that
    does), so 692 is 0.692 kW, not 692 kW; a row in another unit is quarantined."""
    (tmp_path / "enedis.csv").write_text(enedis([692, 540, 780]).replace(";W;2023-03-13 01:00", ";kW;2023-03-13 01:00"))
    run_cloud_sync.main(["--import", str(tmp_path / "enedis.csv"), "--device-id", "linky", "--timezone",
                         "Europe/Paris", "--column-map", "Valeur=home_load_total_load_kw",
                         "--cloud-db", str(tmp_path / "cloud.db")])
    out = capsys.readouterr().out
    assert "imported 2 readings of linky (1 quarantined)" in out
    assert "  units: Valeur in W by its Unité column\n" in out
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        stored = store.read_readings("linky")
        assert stored[dd.LOAD_TOTAL].tolist() == pytest.approx([0.692, 0.780])
        assert stored[dd.TS].tolist() == [pd.Timestamp("2023-03-12 23:30Z"), pd.Timestamp("2023-03-13 00:30Z")]
        assert store.read_quarantine("linky")[s.REASON].str.contains("Unité 'kW' is not W").all()


def test_a_unit_in_the_title_block_above_the_names_is_the_file_s(tmp_path, cloud):
    """Enedis' older export: a table about the export (its ``Unite`` over ``W``), then
    ``Horodate;Valeur`` with offsets; the title block's unit holds for the column of numbers."""
    (tmp_path / "old.csv").write_text(
        "Identifiant PRM;Type de donnees;Date de debut;Date de fin;Grandeur physique;Grandeur metier;Etape metier;"
        "Unite;Pas en minutes\n"
        "19125759625988;Courbe de charge;01/01/2022;31/12/2022;Energie active;Consommation;Comptage Brut;W;\n"
        "Horodate;Valeur\n2022-01-01T00:30:00+01:00;478\n2022-01-01T01:00:00+01:00;512\n")
    result = import_file(tmp_path / "old.csv", cloud, ImportOptions("linky", {"Valeur": dd.LOAD_TOTAL}))
    assert result.units_read == {"Valeur": "W by the file's header"}
    assert cloud.read_readings("linky")[dd.LOAD_TOTAL].tolist() == pytest.approx([0.478, 0.512])
    with pytest.raises(UsageError, match=r"--units kW but column 'Valeur' is in W by the file's header"):
        import_file(tmp_path / "old.csv", cloud, ImportOptions("linky", {"Valeur": dd.LOAD_TOTAL}, units="kW"))


def test_a_file_that_names_no_unit_is_read_as_kw_and_a_home_s_watts_are_flagged(tmp_path, capsys):
    """Without a unit anywhere the import reads kW and says so, and a house load averaging
    hundreds of kW is reported as watts read as kW; the same file with ``--units W`` is a home's."""
    (tmp_path / "w.csv").write_text("time,load\n2024-01-01T00:15Z,450\n2024-01-01T00:30Z,520\n2024-01-01T00:45Z,610\n")
    db = str(tmp_path / "cloud.db")
    args = ["--import", str(tmp_path / "w.csv"), "--device-id", "h", "--column-map", "load=home_load_total_load_kw"]
    run_cloud_sync.main([*args, "--cloud-db", db])
    out = capsys.readouterr().out
    assert "  units: load in kW by default: the file names no unit (--units W if it holds watts)\n" in out
    assert ("magnitude: warning: home_load_total_load_kw averages 526.7 kW, far above a home's few kW: watts read as "
            "kW? (--units W)") in out
    run_cloud_sync.main([*args, "--units", "W", "--device-id", "h2", "--cloud-db", db])
    out = capsys.readouterr().out
    assert "units:" not in out
    assert "magnitude: mean |home_load_total_load_kw| 0.527 kW: a home's" in out


#: Octopus Energy's "Download your data": a space after each comma, the interval's start and
#: end with the local offset, which changes at DST ("+01:00" then "Z"), half-hours in kWh.
OCTOPUS = (" Consumption (kWh), Start, End\n"
           "0.579000, 2025-10-26T00:30:00+01:00, 2025-10-26T01:00:00+01:00\n"
           "0.312000, 2025-10-26T01:00:00+01:00, 2025-10-26T01:30:00+01:00\n"
           "0.250000, 2025-10-26T01:30:00+01:00, 2025-10-26T01:00:00Z\n"
           "0E-20, 2025-10-26T01:00:00Z, 2025-10-26T01:30:00Z\n")


def test_a_second_file_into_a_field_already_imported_says_which_values_it_replaced(tmp_path, capsys):
    """A field holds one value per time: an export download mapped against the grid flow an
    import download filled replaces its values, and the report counts them; the same file
    imported again replaces nothing."""
    (tmp_path / "import.csv").write_text(OCTOPUS)
    (tmp_path / "export.csv").write_text(OCTOPUS.replace("0.579000", "0.100000"))
    db = str(tmp_path / "cloud.db")
    args = ["--device-id", "uk-home", "--units", "kWh", "--cloud-db", db, "--json"]
    run_cloud_sync.main(["--import", str(tmp_path / "import.csv"), "--column-map",
                         "Consumption (kWh)=net_grid_flow_kw", *args])
    run_cloud_sync.main(["--import", str(tmp_path / "import.csv"), "--column-map",
                         "Consumption (kWh)=net_grid_flow_kw", *args])
    outcomes = [json.loads(text) for text in capsys.readouterr().out.replace("}\n{", "}\x00{").split("\x00")]
    assert [o["replaced"] for o in outcomes] == [{}, {}]
    assert outcomes[0]["rows_stored"] == 4  # the End column is the time: across the change of offset
    run_cloud_sync.main(["--import", str(tmp_path / "export.csv"), "--column-map",
                         "Consumption (kWh)=-net_grid_flow_kw", *args[:-1]])
    out = capsys.readouterr().out
    assert ("  replaced: 3 stored values of net_grid_flow_kw (2025-10-26 00:00Z to 2025-10-26 01:00Z) with this "
            "file's; a field holds one value per time") in out  # 0 is -0: one value is the same
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.read_readings("uk-home")[dd.NET_GRID_FLOW].tolist() == pytest.approx([-0.2, -0.624, -0.5, 0.0])


def octopus(values: list[str], start: str = "2025-10-26T00:30:00+01:00", minutes: int = 30) -> str:
    """An Octopus download (the layout of :data:`OCTOPUS`) of half-hours from ``start``; a
    value of None leaves its half-hour out, as a download with a missing reading does."""
    first, rows = pd.Timestamp(start), [" Consumption (kWh), Start, End"]
    for k, value in enumerate(values):
        at = first + pd.Timedelta(minutes=minutes * k)
        if value is not None:
            rows.append(f"{value}, {at.isoformat()}, {(at + pd.Timedelta(minutes=minutes)).isoformat()}")
    return "\n".join(rows) + "\n"


def import_both(tmp_path, *extra: str) -> int:
    return run_cli(run_cloud_sync.main, [
        "--import", str(tmp_path / "import.csv"), "--column-map", "Consumption (kWh)=net_grid_flow_kw",
        "--import", str(tmp_path / "export.csv"), "--column-map", "Consumption (kWh)=-net_grid_flow_kw",
        "--device-id", "uk-home", "--units", "kWh", "--cloud-db", str(tmp_path / "cloud.db"), *extra])


def test_an_import_and_an_export_download_make_one_grid_flow(tmp_path, capsys):
    """Two downloads of one meter, each with its own column map, are joined by time: the grid
    flow is the import less the export; importing both again changes nothing."""
    (tmp_path / "import.csv").write_text(octopus(["0.500", "0.250", "0.000", "0.100"]))
    (tmp_path / "export.csv").write_text(octopus(["0.000", "0.100", "0.400", "0E-20"]))
    assert import_both(tmp_path) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported 4 readings of uk-home (0 quarantined)")
    assert "columns not imported" not in out  # each file's Start is the interval's other end, no reading
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        stored = store.read_readings("uk-home")
        assert stored[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.0, 0.3, -0.8, 0.2])  # kWh per half-hour, as kW
        assert stored[dd.TS].iloc[0] == pd.Timestamp("2025-10-26T00:00Z")  # each half-hour at its end
        assert store.runs("cloud_import")[0]["details"]["file"] == "import.csv + export.csv"
    assert import_both(tmp_path, "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["rows_stored"], again["replaced"]) == (4, {})


def test_a_half_hour_one_download_lacks_is_quarantined_with_the_other_s_reading(tmp_path, capsys):
    """The grid flow at a time only one download has is unknown: it is quarantined naming the
    file that lacks it, with the reading it has, and the other times are stored."""
    (tmp_path / "import.csv").write_text(octopus(["0.500", "0.250", "0.300", "0.100"]))
    (tmp_path / "export.csv").write_text(octopus(["0.000", None, "0.100", "0.000"]))
    assert import_both(tmp_path) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported 3 readings of uk-home (1 quarantined)")
    assert ("  joined: 1 time of net_grid_flow_kw (2025-10-26 00:30Z to 2025-10-26 00:30Z) lack a reading in one of "
            "the files summed into it: quarantined") in out
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.read_readings("uk-home")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.0, 0.4, 0.2])
        held = store.read_quarantine("uk-home")
    assert held[s.REASON].tolist() == ["net_grid_flow_kw sums 2 files; export.csv has no reading at this time"]
    assert held[s.PAYLOAD].iloc[0]["import.csv: net_grid_flow_kw"] == pytest.approx(0.5)
    assert held[dd.TS].iloc[0] == pd.Timestamp("2025-10-26T00:30Z")


def test_downloads_joined_again_release_what_they_deliver_now_and_keep_what_they_still_lack(tmp_path, capsys):
    """The export download lacking a half-hour and the import download holding a reading no
    meter makes, both downloaded again whole: the joined times are stored and their refusals
    go (the import's own refused row, and the two times a file lacked)."""
    (tmp_path / "import.csv").write_text(octopus(["0.500", "0.250", "0.300", "99999"]))
    (tmp_path / "export.csv").write_text(octopus(["0.000", None, "0.100", "0.000"]))
    assert import_both(tmp_path) == 0
    assert capsys.readouterr().out.startswith("imported 2 readings of uk-home (3 quarantined)")
    (tmp_path / "import.csv").write_text(octopus(["0.500", "0.250", "0.300", "0.100"]))
    (tmp_path / "export.csv").write_text(octopus(["0.000", "0.050", "0.100", "0.000"]))
    reverse = ["--import", str(tmp_path / "export.csv"), "--column-map", "Consumption (kWh)=-net_grid_flow_kw",
               "--import", str(tmp_path / "import.csv"), "--column-map", "Consumption (kWh)=net_grid_flow_kw",
               "--device-id", "uk-home", "--units", "kWh", "--cloud-db", str(tmp_path / "cloud.db"), "--json"]
    assert run_cli(run_cloud_sync.main, reverse) == 0  # the same downloads, given the other way round
    report = json.loads(capsys.readouterr().out)
    assert (report["rows_stored"], report["rows_quarantined"], report["released_from_quarantine"]) == (4, 0, 3)
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.read_quarantine("uk-home").empty


def test_a_field_read_less_often_than_the_files_rows_is_not_called_blank_between_its_readings(tmp_path, capsys):
    """A meter's 5-minute load joined to an inverter's 15-minute PV: the PV is blank two rows
    in three by design, and the report names only the hour it really lacks."""
    times = pd.date_range("2024-06-01 00:05", periods=288, freq="5min")
    load = pd.DataFrame({"time": times.strftime("%Y-%m-%d %H:%M"), "load_kw": 0.5})
    pv_times = times[2::3]
    pv = pd.DataFrame({"time": pv_times.strftime("%Y-%m-%d %H:%M"), "pv_kw": 1.0})
    pv = pv[(pv_times < "2024-06-01 10:00") | (pv_times >= "2024-06-01 11:00")]  # the inverter's hour offline
    load.to_csv(tmp_path / "load.csv", index=False)
    pv.to_csv(tmp_path / "pv.csv", index=False)
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "load.csv"), "--column-map",
                                         "load_kw=home_load_total_load_kw", "--import", str(tmp_path / "pv.csv"),
                                         "--column-map", "pv_kw=solar_generation_kw", "--device-id", "home",
                                         "--cloud-db", str(tmp_path / "cloud.db")]) == 0
    gaps = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("gaps:"))
    assert gaps.strip() == ("gaps: none (a reading every 5 min); blank cells, kept as gaps: solar_generation_kw "
                            "1.17 h in all (longest 1.17 h from 2024-06-01 09:50Z)")


def test_downloads_in_different_intervals_are_refused_before_anything_is_stored(tmp_path, capsys):
    (tmp_path / "import.csv").write_text(octopus(["0.500", "0.250", "0.300", "0.100"]))
    (tmp_path / "export.csv").write_text(octopus(["0.000", "0.100"], minutes=60))
    assert import_both(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(
        "net_grid_flow_kw is summed from files in different intervals (import.csv every 30 min, export.csv every "
        "1 h); expected one interval, as their sum is taken reading by reading")
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.read_readings("uk-home").empty and store.read_quarantine("uk-home").empty
        assert store.runs("cloud_import")[0]["status"] == "failed"


@pytest.mark.parametrize("maps,message", [
    (["a=net_grid_flow_kw", "b=net_grid_flow_kw", "c=net_grid_flow_kw"],
     "--column-map is given 3 times for 2 --import files; expected it once for all of them or once for each"),
    (["Consumption (kWh)=net_grid_flow_kw"], "import.csv is given twice; expected each file once"),
])
def test_column_maps_are_one_for_all_files_or_one_for_each(tmp_path, capsys, maps, message):
    (tmp_path / "import.csv").write_text(octopus(["0.500", "0.250"]))
    argv = ["--import", str(tmp_path / "import.csv"), "--import", str(tmp_path / "import.csv"),
            "--device-id", "uk-home", "--cloud-db", str(tmp_path / "cloud.db")]
    for text in maps:
        argv += ["--column-map", text]
    assert run_cli(run_cloud_sync.main, argv) == 2
    assert message in capsys.readouterr().err


def test_an_event_file_imports_alone(tmp_path, capsys):
    (tmp_path / "meter.csv").write_text("ts,grid\n2025-10-26T00:00:00Z,0.5\n2025-10-26T00:30:00Z,0.4\n")
    (tmp_path / "history.csv").write_text("entity_id,state,last_changed\nsensor.pv,0.5,2025-10-26T00:00:00Z\n")
    argv = ["--import", str(tmp_path / "meter.csv"), "--column-map", "grid=net_grid_flow_kw",
            "--import", str(tmp_path / "history.csv"), "--column-map", "sensor.pv=solar_generation_kw",
            "--device-id", "uk-home", "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, argv) == 2
    assert "history.csv: an event file (entity_id, state) imports alone" in capsys.readouterr().err


def test_a_column_both_downloads_leave_out_is_named_once(tmp_path, capsys):
    (tmp_path / "import.csv").write_text("ts,kWh,Tariff\n2025-01-01T00:30Z,0.4,std\n2025-01-01T01:00Z,0.3,std\n")
    (tmp_path / "export.csv").write_text("ts,kWh,Tariff,MPAN\n2025-01-01T00:30Z,0.1,exp,19\n2025-01-01T01:00Z,0,exp,19\n")
    assert run_cli(run_cloud_sync.main, [
        "--import", str(tmp_path / "import.csv"), "--column-map", "kWh=net_grid_flow_kw",
        "--import", str(tmp_path / "export.csv"), "--column-map", "kWh=-net_grid_flow_kw",
        "--device-id", "uk-home", "--units", "kWh", "--cloud-db", str(tmp_path / "cloud.db"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["columns_not_imported"] == ["Tariff", "export.csv: MPAN"]
    assert report["rows_stored"] == 2


def test_an_export_meter_fitted_later_keeps_the_import_alone_before_it(tmp_path, capsys):
    """The export download begins with the PV, a half-hour after the import's first: imported
    alone first, then both, the import's own value stays where the export has none, and the
    sums replace it where both have one."""
    (tmp_path / "import.csv").write_text(octopus(["0.500", "0.250", "0.300", "0.100"]))
    (tmp_path / "export.csv").write_text(octopus([None, "0.050", "0.100", "0.000"]))
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "import.csv"), "--column-map",
                                         "Consumption (kWh)=net_grid_flow_kw", "--device-id", "uk-home", "--units",
                                         "kWh", "--cloud-db", str(tmp_path / "cloud.db")]) == 0
    assert import_both(tmp_path) == 0
    out = capsys.readouterr().out
    assert "import the other alone first, then both" in out and "replaced: 2 stored values" in out
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        assert store.read_readings("uk-home")[dd.NET_GRID_FLOW].tolist() == pytest.approx([1.0, 0.4, 0.4, 0.2])


def test_a_day_per_row_with_an_interval_per_column_is_refused_naming_nem12(tmp_path, capsys):
    """Victorian distributors' interval download (Powercor, CitiPower, Jemena: ``NMI,METER
    SERIAL NUMBER,CON/GEN,DATE,ESTIMATED?,00:00 - 00:30,…,23:30 - 00:00``, a day per row)
    holds each half hour in its own column: a column mapped would store one half hour a day,
    at the date's midnight. Refused in one line, nothing stored; the same portal's NEM12
    download imports."""
    slots = [f"{h:02d}:{m:02d} - {(h + (m + 30) // 60) % 24:02d}:{(m + 30) % 60:02d}" for h in range(24) for m in (0, 30)]
    rows = [f"6305000000,123456,Consumption,{day}/07/2024,No," + ",".join(["0.25"] * 48) for day in ("03", "04", "15")]
    (tmp_path / "interval.csv").write_text("\n".join(["NMI,METER SERIAL NUMBER,CON/GEN,DATE,ESTIMATED?," + ",".join(slots),
                                                      *rows]) + "\n")
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, ["--import", str(tmp_path / "interval.csv"), "--device-id", "home-1", "--units",
                                         "kWh", "--column-map", "00:00 - 00:30=net_grid_flow_kw", "--cloud-db",
                                         str(db), "--timezone", "Australia/Melbourne"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'interval.csv'}: a day per row with an interval per column ('00:00 - 00:30' … "
        "'23:30 - 00:00') is not read; expected a reading per row, such as the distributor's NEM12 download")
    with SQLiteCloudStore(db) as store:
        assert store.read_readings("home-1").empty
