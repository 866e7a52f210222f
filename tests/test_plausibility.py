"""The plausibility report on an imported series: a clock off by an hour, PV above the
nameplate, a flat-lined sensor and gaps, each found whatever the chunking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pvlib import solarposition

from cloud.sync.plausibility import Plausibility, interval_of, pv_peak_offsets_h
from der_core import der_data as dd
from der_core.config import SolarConfig
from der_physics.solar import clearsky_ac_kw

LONGITUDE = 13.4  # Berlin: solar noon near 11:06 UTC


def pv_series(days: int = 365, shift_h: float = 0.0, summer_only: bool = False, peak_kw: float = 4.0) -> pd.DataFrame:
    """A clear-sky-shaped PV series at LONGITUDE, optionally logged ``shift_h`` late."""
    ts = pd.date_range("2024-01-01", periods=days * 96, freq="15min", tz="UTC")
    late = shift_h * ((ts.month >= 4) & (ts.month <= 10) if summer_only else np.ones(len(ts), dtype=bool))
    true_time = ts - pd.to_timedelta(late, unit="h")  # what the clock shows, less its error
    noon_h = 12 - LONGITUDE / 15 - solarposition.equation_of_time_spencer71(true_time.day_of_year) / 60
    hour_from_noon = true_time.hour + (true_time.minute + 7.5) / 60 - noon_h
    shifted = peak_kw * np.clip(np.cos(hour_from_noon * np.pi / 12), 0, None) ** 2
    return pd.DataFrame({dd.TS: ts, dd.SOLAR_KW: np.asarray(shifted), dd.LOAD_TOTAL: 0.5 + 0.1 * np.sin(np.arange(len(ts)))})


def checked(frame: pd.DataFrame, chunk: int = 5000, longitude=LONGITUDE, nameplate=None) -> dict[str, object]:
    checks = Plausibility(interval=interval_of(frame[dd.TS].iloc[:100]))
    for start in range(0, len(frame), chunk):
        checks.add(frame.iloc[start:start + chunk].reset_index(drop=True), [dd.SOLAR_KW, dd.LOAD_TOTAL], nameplate)
    return {f.check: f for f in checks.report(longitude, nameplate)}


def test_a_true_clock_peaks_at_solar_noon():
    assert np.nanmax(np.abs(pv_peak_offsets_h(_profile(pv_series()), LONGITUDE))) < 0.2
    assert checked(pv_series())["clock"].status == "ok"


@pytest.mark.parametrize("summer_only, months", [
    (False, "Jan, Feb, Mar, Apr, May, Jun, Jul, Aug, Sep, Oct, Nov, Dec:"),
    (True, "Apr, May, Jun, Jul, Aug, Sep, Oct:"),
])
def test_pv_logged_an_hour_late_reads_as_a_clock_shift(summer_only, months):
    finding = checked(pv_series(shift_h=1.0, summer_only=summer_only))["clock"]
    assert finding.status == "warning"
    assert "PV peaks 1 h after solar noon in " + months in finding.message
    assert "likely clock shift of +1 h" in finding.message


SOUTH_EAST = SolarConfig(latitude=52.5, longitude=LONGITUDE, tilt_degrees=45.0, azimuth_degrees=120.0)


def south_east_pv(shift_h: float) -> pd.DataFrame:
    """A year of the clear-sky output of an array facing 60 degrees east of south, logged
    ``shift_h`` late."""
    ts = pd.date_range("2024-01-01", periods=365 * 96, freq="15min", tz="UTC")
    pv = clearsky_ac_kw(SOUTH_EAST, ts - pd.Timedelta(hours=shift_h))
    return pd.DataFrame({dd.TS: ts, dd.SOLAR_KW: pv, dd.LOAD_TOTAL: 0.5})


def test_against_solar_noon_alone_a_south_east_array_reads_as_a_clock_shift():
    finding = checked(south_east_pv(0.0))["clock"]
    assert finding.status == "warning" and "likely clock shift of -1 h" in finding.message


@pytest.mark.parametrize("shift_h, status", [(0.0, "ok"), (1.0, "warning")])
def test_an_array_facing_south_east_is_checked_against_its_own_clear_sky_peak(shift_h, status):
    """An array facing 60 degrees east of south peaks about an hour before solar noon: on a
    true clock that is its nature, not a clock error; an hour late it is one."""
    array, frame = SOUTH_EAST, south_east_pv(shift_h)
    checks = Plausibility(interval=interval_of(frame[dd.TS].iloc[:100]))
    checks.add(frame, [dd.SOLAR_KW, dd.LOAD_TOTAL])
    clock = checks.report(None, None, array)[0]
    assert clock.status == status and "the declared array's clear-sky peak" in clock.message


def test_a_month_s_last_evening_west_of_greenwich_stays_in_its_month():
    """A Denver array's August, ending at local midnight: its last evening falls on the
    first of September in UTC, where alone it would read as PV peaking six hours late."""
    array = SolarConfig(latitude=39.74, longitude=-105.18, tilt_degrees=45.0, azimuth_degrees=158.0)
    ts = pd.date_range("2012-08-01T06:15Z", "2012-09-01T06:00Z", freq="15min")
    frame = pd.DataFrame({dd.TS: ts, dd.SOLAR_KW: clearsky_ac_kw(array, ts - pd.Timedelta(minutes=7.5))})
    assert (frame[dd.TS].dt.month == 9).to_numpy()[frame[dd.SOLAR_KW].to_numpy() > 0].any()  # the case itself
    checks = Plausibility(interval=pd.Timedelta(minutes=15), longitude=array.longitude)
    checks.add(frame, [dd.SOLAR_KW])
    clock = checks.report(None, None, array)[0]
    assert (clock.status, clock.message) == ("ok", "PV peaks within 45 min of the declared array's clear-sky peak in "
                                                   "every month")


def test_without_a_longitude_the_clock_check_is_skipped_with_a_note():
    finding = checked(pv_series(days=3), longitude=None)["clock"]
    assert (finding.status, finding.message) == ("skipped", "site longitude unknown (no sites row; --longitude DEG)")


def test_pv_above_the_nameplate_is_reported():
    frame = pv_series(days=3, peak_kw=4.0)
    findings = checked(frame, nameplate=3.0)
    above = int((frame[dd.SOLAR_KW] > 3.0).sum())
    assert findings["pv nameplate"].status == "warning" and above > 0
    assert findings["pv nameplate"].message.startswith(f"{above} readings above the 3 kW nameplate (max 4 kW)")
    assert checked(pv_series(days=3), nameplate=5.0)["pv nameplate"].status == "ok"


@pytest.mark.parametrize("chunk", [7, 5000])
def test_a_sensor_stuck_at_a_non_zero_value_is_reported_across_chunks(chunk):
    frame = pv_series(days=3)
    frame.loc[100:130, dd.LOAD_TOTAL] = 1.25  # 31 readings: 7.5 h
    frame.loc[200:220, dd.LOAD_TOTAL] = 0.75  # 5 h: short of the threshold
    finding = checked(frame, chunk)["flat lines"]
    assert finding.status == "warning"
    assert finding.message == "home_load_total_load_kw 1x, longest 1.25 for 7.5 h from 2024-01-02 01:00Z"


def test_night_zeros_are_not_a_flat_line():
    assert checked(pv_series(days=3))["flat lines"].status == "ok"


@pytest.mark.parametrize("chunk", [7, 5000])
def test_pv_at_zero_through_whole_days_and_a_house_at_zero_are_reported_across_chunks(chunk):
    """An array under snow (or an inverter that failed) reads 0 for days, and a logger that
    writes 0 for what it missed leaves a house drawing nothing: neither is a non-zero value
    held, and both went unsaid while the jobs learnt from them as measured."""
    frame = pv_series(days=8)
    frame.loc[2 * 96:5 * 96 - 1, dd.SOLAR_KW] = 0.0  # three whole days under snow
    frame.loc[600:628, dd.LOAD_TOTAL] = 0.0  # 7 h
    finding = checked(frame, chunk)["flat lines"]
    assert finding.status == "warning"
    assert "solar_generation_kw 1x, longest 0 for " in finding.message
    assert "home_load_total_load_kw 1x, longest 0 for 7 h from 2024-01-07 06:00Z" in finding.message
    assert checked(pv_series(days=8), chunk)["flat lines"].message == (
        "no field holds one non-zero value for 6 h or more, nor PV 0 for 24 h, nor the house load 0 for 6 h")


@pytest.mark.parametrize("chunk", [7, 5000])
def test_gaps_are_counted_and_kept(chunk):
    frame = pv_series(days=3).drop(index=[*range(10, 14), *range(50, 51)]).reset_index(drop=True)
    assert checked(frame, chunk)["gaps"].message == "2 kept as gaps, longest 1 h (a reading every 15 min)"


def _profile(frame: pd.DataFrame) -> np.ndarray:
    checks = Plausibility()
    checks.add(frame, [dd.SOLAR_KW])
    return checks.pv_profile


def test_a_file_without_pv_skips_the_nameplate_check():
    """A load meter's file says nothing of the PV's nameplate."""
    checks = Plausibility()
    load = pd.DataFrame({dd.TS: pd.date_range("2024-06-01", periods=96, freq="15min", tz="UTC"), dd.LOAD_TOTAL: 0.5})
    checks.add(load, [dd.LOAD_TOTAL], nameplate_kw=5.0)
    finding = {f.check: f for f in checks.report(LONGITUDE, 5.0)}["pv nameplate"]
    assert (finding.status, finding.message) == ("skipped", "no PV readings in the file")


def home(rows: int = 288) -> pd.DataFrame:
    """A home whose battery covers what the PV does not, counted as the contract counts it:
    grid import and battery charge positive, ``load = grid + PV - battery``."""
    ts = pd.date_range("2024-03-13", periods=rows, freq="5min", tz="UTC")
    load = 0.4 + 0.3 * np.random.default_rng(1).random(rows)
    pv = np.clip(4.0 * np.sin((ts.hour + ts.minute / 60 - 6) / 12 * np.pi), 0, None)
    battery = -np.clip(load - pv, -3.0, 3.0)  # charging from the surplus, discharging into the load
    grid = load - pv + battery
    return pd.DataFrame({dd.TS: ts, dd.LOAD_TOTAL: load, dd.SOLAR_KW: pv, dd.BATTERY_POWER: battery,
                         dd.NET_GRID_FLOW: grid})


def balance(frame: pd.DataFrame, fields: list[str], chunk: int = 100):
    checks = Plausibility(interval=interval_of(frame[dd.TS]))
    for start in range(0, len(frame), chunk):
        checks.add(frame.iloc[start:start + chunk].reset_index(drop=True), fields)
    return {f.check: f for f in checks.report(LONGITUDE, None)}["balance"]


@pytest.mark.parametrize("turned,status,says", [
    ((), "ok", "the house load is grid + PV - battery within 0.000 kW on average"),
    ((dd.BATTERY_POWER,), "warning", "battery_power_kw counted the other way round"),  # Tesla's: discharge positive
    ((dd.NET_GRID_FLOW,), "warning", "net_grid_flow_kw counted the other way round"),  # an export-positive meter
    ((dd.NET_GRID_FLOW, dd.BATTERY_POWER), "warning", "net_grid_flow_kw and battery_power_kw counted the other way"),
])
def test_a_grid_or_battery_counted_the_other_way_round_is_told_by_the_balance(turned, status, says):
    frame = home()
    for column in turned:
        frame[column] = -frame[column]
    found = balance(frame, [dd.LOAD_TOTAL, dd.SOLAR_KW, dd.BATTERY_POWER, dd.NET_GRID_FLOW])
    assert (found.status, says in found.message) == (status, True), found.message
    if turned:
        assert " and ".join(f"COLUMN=-{c}" for c in turned) in found.message


def test_a_balance_that_holds_no_way_round_says_so_and_one_without_its_terms_is_skipped():
    frame = home()
    found = balance(frame, [dd.LOAD_TOTAL, dd.BATTERY_POWER, dd.NET_GRID_FLOW])  # the PV left out of the file
    assert found.status == "warning" and found.message.startswith("the house load is not grid - battery")
    assert balance(frame, [dd.LOAD_TOTAL, dd.NET_GRID_FLOW]).status == "skipped"
    assert balance(frame, [dd.SOLAR_KW, dd.BATTERY_POWER, dd.NET_GRID_FLOW]).status == "skipped"


@pytest.mark.parametrize("chunk", [7, 5000])
def test_a_fields_blank_cells_are_counted_with_their_longest_run_across_chunks(chunk):
    """A logger that writes every time but lost one sensor for days leaves no time gap: the
    blank cells are named per field, with the longest run of them."""
    frame = pv_series(days=3)
    frame.loc[100:139, dd.SOLAR_KW] = np.nan  # 40 readings: 10 h from 2024-01-02 01:00
    frame.loc[200:201, dd.SOLAR_KW] = np.nan
    frame.loc[280:287, dd.LOAD_TOTAL] = np.nan  # the last 8 readings: the run is still open at the end
    message = checked(frame, chunk)["gaps"].message
    assert message == ("none (a reading every 15 min); blank cells, kept as gaps: solar_generation_kw 10.5 h in all "
                       "(longest 10 h from 2024-01-02 01:00Z), home_load_total_load_kw 2 h in all (longest 2 h from "
                       "2024-01-03 22:00Z)")


@pytest.mark.parametrize("chunk", [7, 5000])
def test_a_field_read_less_often_than_the_rows_come_is_blank_between_its_readings_by_design(chunk):
    """PV read every 15 minutes in rows of 5 minutes (an inverter's file joined to a meter's)
    is blank two rows in three: only a run as long as its own interval is a gap of it."""
    ts = pd.date_range("2024-06-01", periods=3 * 288, freq="5min", tz="UTC")
    pv = np.where(np.arange(len(ts)) % 3 == 0, 1.0, np.nan)
    pv[300:360] = np.nan  # five hours without a PV reading: blank from the row after 00:45, the last read
    frame = pd.DataFrame({dd.TS: ts, dd.SOLAR_KW: pv, dd.LOAD_TOTAL: 0.5})
    checks = Plausibility(interval=pd.Timedelta(minutes=5), field_interval={dd.SOLAR_KW: pd.Timedelta(minutes=15)})
    for start in range(0, len(frame), chunk):
        checks.add(frame.iloc[start:start + chunk].reset_index(drop=True), [dd.SOLAR_KW, dd.LOAD_TOTAL])
    message = {f.check: f for f in checks.report(LONGITUDE, None)}["gaps"].message
    assert message == ("none (a reading every 5 min); blank cells, kept as gaps: solar_generation_kw 5.17 h in all "
                       "(longest 5.17 h from 2024-06-02 00:50Z)")


def test_a_series_without_blank_cells_says_none():
    assert checked(pv_series(days=3))["gaps"].message == "none (a reading every 15 min)"


@pytest.mark.parametrize(("scale", "status"), [(0.01, "warning"), (1.0, "ok")])
def test_a_state_of_charge_written_as_a_fraction_of_one_is_reported(scale, status):
    """A logger writing 0.85 for 85 %: stored as 0.85 %, every plan would start from an
    empty battery. Checked across chunks: the highest value of the whole file decides."""
    frame = home()
    frame[dd.BATTERY_SOC] = scale * np.linspace(20.0, 90.0, len(frame))
    checks = Plausibility(interval=interval_of(frame[dd.TS]))
    for start in range(0, len(frame), 50):
        checks.add(frame.iloc[start:start + 50].reset_index(drop=True), [dd.LOAD_TOTAL, dd.BATTERY_SOC])
    found = {f.check: f for f in checks.report(LONGITUDE, None)}["magnitude"]
    assert found.status == status, found.message
    if status == "warning":
        assert found.message.startswith("battery_soc_percent is never above 0.9: a fraction (0 to 1)")


@pytest.mark.parametrize(("peak_kw", "nameplate", "status"), [(200.0, 210.0, "ok"), (200.0, None, "warning"),
                                                              (200_000.0, 210.0, "warning")])
def test_a_large_array_s_mean_is_judged_against_its_declared_nameplate(peak_kw, nameplate, status):
    """NREL's RSF II: a 210 kWp roof declared in its site file was still told "watts read as
    kW?", though the nameplate check of the same report agreed with the file."""
    found = checked(pv_series(days=30, peak_kw=peak_kw), nameplate=nameplate)["magnitude"]
    assert found.status == status, found.message
    if status == "warning" and nameplate:
        assert "far above the site's 210 kW of PV: watts read as kW?" in found.message


def test_pv_read_once_a_day_is_named_too_coarse_not_a_clock_shift():
    """A daily yield export (pvlib's data_shift sample): its mass sits at the UTC day's middle,
    which read as a clock shift of +12 h in every month, and the jobs held each day's mean
    over its night."""
    days = pd.date_range("2024-01-01", periods=365, freq="1D", tz="UTC")
    frame = pd.DataFrame({dd.TS: days, dd.SOLAR_KW: 0.8, dd.LOAD_TOTAL: 0.5})
    found = checked(frame, chunk=100)["clock"]
    assert found.status == "warning" and found.message.startswith("PV read every 24 h: too coarse"), found.message
    assert "clock shift" not in found.message
