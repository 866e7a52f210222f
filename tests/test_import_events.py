"""Event files (one row per state change, as Home Assistant's history panel downloads them)
imported as readings on a five-minute grid.

The files follow what the Home Assistant frontend writes in
``src/panels/history/ha-panel-history.ts`` (``_downloadHistory``): the header
``entity_id,state,last_changed``, then every state of one entity after another, each
``last_changed`` as JavaScript's ``toISOString()`` (UTC, milliseconds, ``Z``), states such as
``unavailable`` as they are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync import event_files as ev
from cloud.sync.importer import ImportOptions, import_file
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.errors import UsageError


def history_csv(path, states: list[tuple[str, str, str]]) -> None:
    """``(entity, state, UTC time 'HH:MM:SS' on 2024-06-01)`` rows, written as the frontend does."""
    lines = ["entity_id,state,last_changed"]
    lines += [f"{entity},{state},2024-06-01T{clock}.000Z" for entity, state, clock in states]
    path.write_text("\n".join(lines) + "\n")


POWER = [
    ("sensor.pv_power", "1000", "10:00:00"), ("sensor.pv_power", "2000", "10:02:30"),
    ("sensor.pv_power", "unavailable", "10:05:00"), ("sensor.pv_power", "3000", "10:08:00"),
    ("sensor.pv_power", "on", "10:12:00"), ("sensor.pv_power", "0", "10:20:00"),
    ("sensor.outdoor_temperature", "21.5", "10:00:00"),
    ("sensor.house_power", "500", "10:00:00"), ("sensor.house_power", "700", "10:12:00"),
    ("sensor.house_power", "900", "10:25:00"),
]
MAP = {"sensor.pv_power": dd.SOLAR_KW, "sensor.house_power": dd.LOAD_TOTAL}


@pytest.fixture
def cloud(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        yield store


@pytest.mark.parametrize("batch_size", [3, 10_000])
def test_held_states_become_the_mean_power_of_each_five_minutes(tmp_path, cloud, batch_size):
    history_csv(tmp_path / "history.csv", POWER)
    result = import_file(tmp_path / "history.csv", cloud, ImportOptions("home-1", MAP, units="W", batch_size=batch_size))
    stored = cloud.read_readings("home-1").set_index(dd.TS)
    stored.index = stored.index.strftime("%H:%M")
    # 10:05: 1000 W for 150 s, 2000 W for 150 s. 10:10: unavailable until 10:08, so 2 of 5
    # minutes known: a gap. The "on" row is quarantined and 3000 W holds until 10:20.
    assert stored[dd.SOLAR_KW].to_dict() == pytest.approx(
        {"10:05": 1.5, "10:10": np.nan, "10:15": 3.0, "10:20": 3.0, "10:25": np.nan}, nan_ok=True)
    assert stored[dd.LOAD_TOTAL].to_dict() == pytest.approx(
        {"10:05": 0.5, "10:10": 0.5, "10:15": 0.5 * 0.4 + 0.7 * 0.6, "10:20": 0.7, "10:25": 0.7})
    assert (result.rows_synced, result.rows_quarantined) == (5, 1)
    assert result.interval == ev.STEP and result.entities_not_imported == ["sensor.outdoor_temperature"]
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["line 6: state 'on' is not a number"]


def test_a_meter_total_gives_the_mean_power_between_interpolated_totals(tmp_path, cloud):
    totals = [("10:00:00", "100.0"), ("10:07:30", "100.25"), ("10:15:00", "100.5"), ("10:17:30", "unavailable"),
              ("10:20:00", "100.6"), ("10:25:00", "100.7"), ("10:30:00", "0.1"), ("10:35:00", "0.2")]
    history_csv(tmp_path / "history.csv", [("sensor.pv_energy_total", v, t) for t, v in totals])
    options = ImportOptions("home-1", {"sensor.pv_energy_total": dd.SOLAR_KW}, units="kWh-total")
    import_file(tmp_path / "history.csv", cloud, options)
    stored = cloud.read_readings("home-1").set_index(dd.TS)[dd.SOLAR_KW]
    stored.index = stored.index.strftime("%H:%M")
    # 0.25 kWh per 7.5 min is 2 kW; an unavailable state, and the fall to 0.1 (a reset), leave
    # the steps across them without power; 0.1 kWh per 5 min is 1.2 kW.
    assert stored.to_dict() == pytest.approx({"10:05": 2.0, "10:10": 2.0, "10:15": 2.0, "10:25": 1.2, "10:35": 1.2})


def test_states_out_of_order_and_repeated_read_as_their_times_say():
    t = (pd.to_datetime(["2024-06-01T10:02:30Z", "2024-06-01T10:00:00Z", "2024-06-01T10:02:30Z",
                         "2024-06-01T10:05:00Z"]).as_unit("us").asi8)
    events = ev.Events()
    events.add("e", t, np.array([9.0, 1.0, 2.0, 2.0]))
    times, values = events.of("e")
    assert values.tolist() == [1.0, 2.0, 2.0] and np.all(np.diff(times) > 0)
    grid = ev.grid_of([times])
    assert ev.held_means(times, values, grid).tolist() == [1.5]


@pytest.mark.parametrize("extra, message", [
    ([], "an event file (entity_id, state); map its entities with --column-map ENTITY=field"),
    (["--column-map", "sensor.pv_power=solar_generation_kw", "--units", "Wh"],
     "--units Wh: an event file's states are power or a meter's running total; expected one of W, kW, Wh-total, kWh-total"),
    (["--column-map", "sensor.pv=solar_generation_kw", "--units", "W"],
     "--column-map names ['sensor.pv'], not in the file's entity_id (entities such as"),
])
def test_an_event_file_that_cannot_be_read_is_one_line_and_stores_no_reading(tmp_path, capsys, extra, message):
    history_csv(tmp_path / "history.csv", POWER)
    args = ["--import", str(tmp_path / "history.csv"), "--device-id", "home-1", "--cloud-db", str(tmp_path / "c.db"), *extra]
    assert run_cli(run_cloud_sync.main, args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    with SQLiteCloudStore(tmp_path / "c.db") as store:
        assert store.count_readings("home-1") == 0


def test_the_cli_reports_the_entities_it_left_out(tmp_path, capsys):
    history_csv(tmp_path / "history.csv", POWER)
    args = ["--import", str(tmp_path / "history.csv"), "--device-id", "home-1", "--units", "W",
            "--column-map", "sensor.pv_power=solar_generation_kw,sensor.house_power=home_load_total_load_kw",
            "--cloud-db", str(tmp_path / "c.db")]
    assert run_cli(run_cloud_sync.main, args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["imported 5 readings of home-1 (1 quarantined)",
                       "  entities not imported (not in --column-map ENTITY=field): sensor.outdoor_temperature"]


def test_a_text_field_cannot_come_from_an_event_file(tmp_path, cloud):
    history_csv(tmp_path / "history.csv", POWER)
    with pytest.raises(UsageError, match="grid_price_time_of_use_period cannot come from an event file; expected numeric fields"):
        import_file(tmp_path / "history.csv", cloud, ImportOptions("home-1", {"sensor.pv_power": dd.TOU_PERIOD}))


def test_two_entities_mapped_to_one_field_are_summed(tmp_path, cloud):
    """Two inverters' power sensors make the home's PV; where one has no value the sum has none."""
    history_csv(tmp_path / "history.csv", [
        ("sensor.pv_east", "1000", "10:00:00"), ("sensor.pv_east", "1500", "10:05:00"),
        ("sensor.pv_east", "unavailable", "10:10:00"),
        ("sensor.pv_west", "400", "10:00:00"), ("sensor.pv_west", "600", "10:05:00"),
        ("sensor.pv_west", "800", "10:15:00"), ("sensor.pv_west", "800", "10:25:00"),
    ])
    options = ImportOptions("home-1", {"sensor.pv_east": dd.SOLAR_KW, "sensor.pv_west": dd.SOLAR_KW}, units="W")
    import_file(tmp_path / "history.csv", cloud, options)
    stored = cloud.read_readings("home-1").set_index(dd.TS)[dd.SOLAR_KW]
    stored.index = stored.index.strftime("%H:%M")
    west = import_file(tmp_path / "history.csv", cloud, ImportOptions("home-2", {"sensor.pv_west": dd.SOLAR_KW}, units="W"))
    assert west.rows_synced == 5  # west alone has a value every five minutes to 10:25
    assert stored.dropna().to_dict() == pytest.approx({"10:05": 1.4, "10:10": 2.1})


def test_a_gap_in_the_history_never_blanks_what_another_file_stored(tmp_path, cloud):
    """The inverter's own export filled 10:10, which the history leaves a gap (unavailable
    for most of it): the history's blank is no value, and the inverter's reading stays."""
    (tmp_path / "inverter.csv").write_text("ts,pv_w\n2024-06-01T10:10:00Z,2500\n")
    import_file(tmp_path / "inverter.csv", cloud, ImportOptions("home-1", {"pv_w": dd.SOLAR_KW}, units="W"))
    history_csv(tmp_path / "history.csv", POWER)
    import_file(tmp_path / "history.csv", cloud, ImportOptions("home-1", MAP, units="W"))
    stored = cloud.read_readings("home-1").set_index(dd.TS)[dd.SOLAR_KW]
    assert stored[pd.Timestamp("2024-06-01T10:10Z")] == pytest.approx(2.5)
    assert stored[pd.Timestamp("2024-06-01T10:15Z")] == pytest.approx(3.0)


def test_an_event_file_imported_again_with_its_units_corrected_releases_its_grid_s_refusals(tmp_path, cloud):
    """Watts read as kW: the five-minute steps of 11 and 12 MW of PV are refused. Imported
    again with ``--units W`` they are stored and leave the quarantine; the state that is not
    a number stays, since no reading stands for it."""
    history_csv(tmp_path / "history.csv", [
        ("sensor.pv_power", "12000", "10:00:00"), ("sensor.pv_power", "11000", "10:05:00"),
        ("sensor.pv_power", "on", "10:07:00"), ("sensor.pv_power", "500", "10:10:00"),
        ("sensor.pv_power", "0", "10:20:00"),
        ("sensor.house_power", "500", "10:00:00"), ("sensor.house_power", "900", "10:25:00"),
    ])
    first = import_file(tmp_path / "history.csv", cloud, ImportOptions("home-1", MAP, units="kW"))
    again = import_file(tmp_path / "history.csv", cloud, ImportOptions("home-1", MAP, units="W"))
    assert (first.rows_quarantined, first.released) == (3, 0)  # 10:05, 10:10 and the state 'on'
    assert (again.rows_synced, again.rows_quarantined, again.released) == (5, 1, 2)
    assert cloud.read_quarantine("home-1")[s.REASON].tolist() == ["line 4: state 'on' is not a number"]
    assert cloud.read_readings("home-1")[dd.SOLAR_KW].max() == pytest.approx(12.0)
