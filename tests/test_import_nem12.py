"""AEMO's NEM12 interval meter data: an Australian distributor's download of a home's meter,
imported as its grid flow with no options, its times read as NEM time (UTC+10 all year).

The files are written as AEMO's *Meter Data File Format Specification NEM12 & NEM13*
lays them out: a 100 header (``100,NEM12,DateTime,FromParticipant,ToParticipant``), a 200
record per channel (``200,NMI,NMIConfiguration,RegisterID,NMISuffix,MDMDataStreamIdentifier,
MeterSerialNumber,UOM,IntervalLength,NextScheduledReadDate``), a 300 record per day
(``300,IntervalDate,IntervalValue1..N,QualityMethod,ReasonCode,ReasonDescription,
UpdateDateTime,MSATSLoadDateTime``), 400 records for intervals of another quality
(``400,StartInterval,EndInterval,QualityMethod,ReasonCode,ReasonDescription``) and a 900 end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync import nem12
from der_core import der_data as dd
from der_core.cli_support import run_cli

NMI = "4102345678"
#: Sydney's clocks go forward at 02:00 on Sunday 1 October 2023; NEM time does not.
DAYS = pd.date_range("2023-09-30", "2023-10-02", freq="D")


def channel(suffix: str, values: np.ndarray, minutes: int = 30, nmi: str = NMI, uom: str = "KWH",
            events: tuple[str, ...] = ()) -> list[str]:
    """A 200 record and a 300 record per day of ``values`` (one row of intervals per day);
    a day with ``events`` has quality V and those 400 records after it."""
    rows = [f"200,{nmi},E1E2B1,{suffix[-1]},{suffix},N{suffix[-1]},METER123,{uom},{minutes},20231231"]
    for day, row in zip(DAYS, values):
        quality = "V" if events and day == DAYS[1] else "A"
        rows.append(f"300,{day:%Y%m%d}," + ",".join(f"{v:.4f}" for v in row) + f",{quality},,,20231003090000,")
        if quality == "V":
            rows.extend(events)
    return rows


def write(path, *channels: list[str], header: bool = True) -> None:
    rows = ["100,NEM12,202310030900,MDP1,RETAILER1"] if header else []
    path.write_text("\n".join([*rows, *(row for c in channels for row in c), "900"]) + "\n")


def day_values(per_interval: float, minutes: int = 30) -> np.ndarray:
    return np.full((len(DAYS), 1440 // minutes), per_interval)


def import_args(path, db, *more: str) -> list[str]:
    return ["--import", str(path), "--device-id", "sydney-home", "--cloud-db", str(db), *more]


def test_a_download_imports_as_the_grid_flow_in_nem_time_across_the_clock_change(tmp_path, capsys):
    """General supply and the controlled load less the export, per half hour, as the mean kW
    of each interval at its end; NEM time stays UTC+10 while Sydney's clocks go forward, so
    the readings run on every half hour with no gap; the intervals a 400 record marks null
    are quarantined."""
    export = np.zeros((len(DAYS), 48))
    export[:, 20:32] = 0.75  # 10:00-16:00 NEM time
    events = ("400,1,20,A,,", "400,21,22,N,,", "400,23,48,A,,")  # two null intervals on 1 October, 10:00-11:00
    write(tmp_path / "nem12.csv", channel("E1", day_values(0.30), events=events), channel("E2", day_values(0.05)),
          channel("B1", export))
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem12.csv", db)) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported 142 readings of sydney-home (2 quarantined)")  # a sum with a null term is none
    assert ("  columns: E1 (kW) + E2 (kW) - B1 (kW) as net_grid_flow_kw, as the file says (--column-map to take them "
            "elsewhere)") in out.splitlines()
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings("sydney-home")
    ends = pd.date_range("2023-09-30 00:30", periods=144, freq="30min").tz_localize("Etc/GMT-10").tz_convert("UTC")
    null = (ends >= pd.Timestamp("2023-10-01 10:30", tz="Etc/GMT-10")) & (ends <= pd.Timestamp("2023-10-01 11:00",
                                                                                                 tz="Etc/GMT-10"))
    assert pd.DatetimeIndex(stored[dd.TS]).equals(ends[~null].as_unit("us"))
    flow = (0.30 + 0.05 - export.ravel()) * 2  # kWh per half hour as kW
    np.testing.assert_allclose(stored[dd.NET_GRID_FLOW], flow[~null])
    with SQLiteCloudStore(db) as store:
        assert store.read_quarantine("sydney-home")[dd.TS].tolist() == list(ends[null].tz_convert("UTC"))


def test_a_null_reading_is_quarantined_where_it_alone_fills_the_row(tmp_path, capsys):
    """A null interval of the only channel leaves no reading at that time: quarantined with
    its text, the rest stored."""
    events = ("400,1,2,N,,", "400,3,48,A,,")
    write(tmp_path / "nem12.csv", channel("E1", day_values(0.2), events=events))
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem12.csv", db)) == 0
    assert capsys.readouterr().out.startswith("imported 142 readings of sydney-home (2 quarantined)")
    with SQLiteCloudStore(db) as store:
        held = store.read_quarantine("sydney-home")
    assert held[dd.TS].tolist() == [pd.Timestamp("2023-09-30T14:30Z"), pd.Timestamp("2023-09-30T15:00Z")]
    assert all("N" in reason for reason in held[s.REASON])


def test_five_minute_data_without_a_header_reads_as_a_distributors_export(tmp_path, capsys):
    """Some distributors' downloads start at the 200 record and read 288 five-minute
    intervals a day: kWh per interval times twelve is the kW."""
    write(tmp_path / "nem12.csv", channel("E1", day_values(0.01, minutes=5), minutes=5), header=False)
    assert nem12.is_nem12(tmp_path / "nem12.csv")
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem12.csv", db)) == 0
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings("sydney-home")
    assert len(stored) == 3 * 288 and stored[dd.NET_GRID_FLOW].to_numpy() == pytest.approx(0.12)
    assert stored[dd.TS].iloc[0] == pd.Timestamp("2023-09-29T14:05Z")


def test_two_meters_in_one_file_are_named_apart_and_none_is_taken(tmp_path, capsys):
    write(tmp_path / "nem12.csv", channel("E1", day_values(0.2)), channel("E1", day_values(0.5), nmi="4102999999"))
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem12.csv", db)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--column-map" in err
    assert f"'{NMI} E1 (kW)'" in err
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem12.csv", db, "--column-map",
                                                    f"{NMI} E1 (kW)=net_grid_flow_kw")) == 0
    with SQLiteCloudStore(db) as store:
        assert store.read_readings("sydney-home")[dd.NET_GRID_FLOW].to_numpy() == pytest.approx(0.4)


@pytest.mark.parametrize("text, message", [
    ("100,NEM13,202310030900,MDP1,RETAILER1\n250,4102345678,E1,1,E1,N1,METER123,D,12345,20230901000000,A,,,"
     "12600,20231001000000,A,,,255,KWH,20231231,20231003000000,\n900\n", "a NEM13 file holds a meter's register reads"),
    ("100,NEM12,202310030900,MDP1,RETAILER1\n200,4102345678,E1,1,E1,N1,METER123,KWH,half,20231231\n900\n",
     "not readable as NEM12"),
])
def test_a_file_that_is_no_nem12_interval_data_is_one_line(tmp_path, capsys, text, message):
    (tmp_path / "nem.csv").write_text(text)
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem.csv", tmp_path / "cloud.db")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_csv_whose_first_cell_is_100_is_no_nem12_file(tmp_path):
    (tmp_path / "meter.csv").write_text("100,2024-06-01T00:00Z\n")
    assert not nem12.is_nem12(tmp_path / "meter.csv")


def test_a_day_record_too_short_for_its_channel_is_quarantined_and_the_rest_stored(tmp_path, capsys):
    rows = channel("E1", day_values(0.2))
    rows[2] = "300,20231001,0.1,0.2,A,,,20231003090000,"  # two values where 48 belong
    write(tmp_path / "nem12.csv", rows)
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem12.csv", db)) == 0
    assert capsys.readouterr().out.startswith("imported 96 readings of sydney-home (1 quarantined)")
    with SQLiteCloudStore(db) as store:
        held = store.read_quarantine("sydney-home")
    assert "Skipping 300 record for 4102345678 E1 20231001" in str(held[s.PAYLOAD].iloc[0])


def test_the_import_help_names_nem12():
    assert "NEM12" in " ".join(run_cloud_sync.build_parser().format_help().split())


def test_a_zipped_file_reads_as_the_file_it_holds(tmp_path, capsys):
    """The specification lets a NEM12 file come as a zip archive of that one file."""
    import zipfile

    write(tmp_path / "nem12.csv", channel("E1", day_values(0.25)))
    with zipfile.ZipFile(tmp_path / "nem12.zip", "w") as archive:
        archive.write(tmp_path / "nem12.csv", "nem12#0123456789012345#mda1#retail1.csv")
    assert nem12.is_nem12(tmp_path / "nem12.zip")
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, import_args(tmp_path / "nem12.zip", db)) == 0
    assert capsys.readouterr().out.startswith("imported 144 readings of sydney-home (0 quarantined)")
    with SQLiteCloudStore(db) as store:
        assert store.read_readings("sydney-home")[dd.NET_GRID_FLOW].to_numpy() == pytest.approx(0.5)


@pytest.mark.parametrize("first, second, kept", [
    ("20231003090000", "20231005120000", 0.45),  # the correction after the first record, as a later file appends it
    ("20231005120000", "20231003090000", 0.25),  # the newer record first
    ("", "20231003090000", 0.45),  # an undated record counts as the older
    ("20231003090000", "20231003090000", 0.25),  # written at the same time: the first in the file
])
def test_a_day_written_twice_keeps_the_newest_record(tmp_path, capsys, first, second, kept):
    """Two downloads concatenated (as some distributors' portals give them): 1 October's
    general supply written again with other values. The record with the later
    UpdateDateTime is stored and the other's readings quarantined as repeats; the days
    written once are stored as they are."""
    original = channel("E1", day_values(0.25))
    original[2] = original[2].replace(",20231003090000,", f",{first},")
    again = [original[0], "300,20231001," + ",".join(["0.4500"] * 48) + f",A,,,{second},"]
    path = tmp_path / "nem12.csv"
    path.write_text("\n".join(["100,NEM12,202310030900,MDP1,RETAILER1", *original, "900",
                               "100,NEM12,202310051200,MDP1,RETAILER1", *again, "900"]) + "\n")
    db = tmp_path / "cloud.db"
    assert run_cli(run_cloud_sync.main, import_args(path, db)) == 0
    assert capsys.readouterr().out.startswith("imported 144 readings of sydney-home (48 quarantined)")
    with SQLiteCloudStore(db) as store:
        stored = store.read_readings("sydney-home").set_index(dd.TS)[dd.NET_GRID_FLOW]
        held = store.read_quarantine("sydney-home")
    day = (stored.index > pd.Timestamp("2023-09-30T14:00Z")) & (stored.index <= pd.Timestamp("2023-10-01T14:00Z"))
    assert stored[day].to_numpy() == pytest.approx(kept * 2) and stored[~day].to_numpy() == pytest.approx(0.5)
    assert len(held) == 48 and all("repeats an earlier row's" in reason for reason in held[s.REASON])
