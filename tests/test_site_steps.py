"""A site's readings over regular steps, completed with what its declaration and physics say:
PV 0 where it has none or the sun is down, the house load from the balance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.site_steps import (
    STEP_COLUMNS,
    balance_formula,
    balance_lacks,
    completed,
    filled_columns,
    local_floor,
    no_load_reason,
    per_step,
    site_steps,
)
from der_core import der_data as dd

NAN = float("nan")
STEP = pd.Timedelta(minutes=15)
NOON = pd.Timestamp("2024-06-15T19:00Z")  # 12:00 in Los Angeles
HOME = {"device_id": "home-1", "latitude": 34.05, "longitude": -118.25, "timezone": "America/Los_Angeles",
        "pv_capacity_kw": 5.0, "tilt_degrees": 20.0, "azimuth_degrees": 180.0, "inverter_kw": 5.0,
        "battery_capacity_kwh": 10.0}


@pytest.mark.parametrize("declared,row,load", [
    ({}, (NAN, 1.0, 2.0, 0.5), 2.5),  # import + PV - charging
    ({}, (NAN, -1.5, 2.0, -0.5), 1.0),  # exporting while discharging
    ({}, (0.7, 1.0, 2.0, 0.5), 0.7),  # a measured load is kept
    ({}, (NAN, 1.0, 2.0, NAN), NAN),  # the battery's power unknown: no load
    ({"battery_capacity_kwh": 0.0}, (NAN, 1.0, 2.0, NAN), 3.0),  # no battery declared
    ({"battery_capacity_kwh": 0.0, "pv_capacity_kw": 0.0}, (NAN, 1.2, NAN, NAN), 1.2),  # the utility meter alone
    ({"battery_capacity_kwh": 0.0, "pv_capacity_kw": NAN}, (NAN, 1.2, NAN, NAN), NAN),  # PV not declared either way
    ({"battery_capacity_kwh": 0.0}, (NAN, -3.0, 2.0, NAN), NAN),  # below zero: the meters disagree
])
def test_the_house_load_is_the_balance_where_it_was_not_measured(declared, row, load):
    steps = pd.DataFrame([dict(zip((dd.LOAD_TOTAL, dd.NET_GRID_FLOW, dd.SOLAR_KW, dd.BATTERY_POWER), row, strict=True))],
                         index=pd.DatetimeIndex([NOON]))
    got = completed(steps, {**HOME, **declared}, STEP)
    assert got[dd.LOAD_TOTAL].iloc[0] == pytest.approx(load, nan_ok=True)
    assert steps[dd.LOAD_TOTAL].iloc[0] == pytest.approx(row[0], nan_ok=True)  # the caller's frame is left as it was


def test_meters_at_different_cadences_balance_over_each_step():
    """A 15-minute utility meter and a 5-minute inverter: a flat 1 kW load is 1 kW, not the
    quarter hour's grid flow plus the PV of its last five minutes."""
    fives = pd.date_range(NOON + pd.Timedelta(minutes=5), periods=6, freq="5min")
    pv = pd.DataFrame({dd.TS: fives, dd.SOLAR_KW: [0.6, 1.2, 1.8, 0.6, 1.2, 1.8]})
    grid = pd.DataFrame({dd.TS: fives[2::3], dd.NET_GRID_FLOW: [1.0 - 1.2, 1.0 - 1.2]})
    readings = pd.concat([pv, grid], ignore_index=True).sort_values(dd.TS)
    steps = site_steps(readings, {**HOME, "battery_capacity_kwh": 0.0}, STEP)
    assert steps[dd.LOAD_TOTAL].tolist() == pytest.approx([1.0, 1.0])


def test_pv_missing_at_night_is_zero_and_missing_in_daylight_stays_missing():
    """An inverter that logs nothing at night: its nights are 0, so the load from the balance
    is there every night; a daytime step without PV stays unknown."""
    ends = pd.DatetimeIndex([pd.Timestamp("2024-06-15T09:00Z"), NOON, NOON + STEP])  # 02:00 and 12:00 in Los Angeles
    steps = pd.DataFrame({dd.SOLAR_KW: [NAN, NAN, 2.0], dd.NET_GRID_FLOW: [0.4, 0.4, -1.0], dd.LOAD_TOTAL: NAN}, index=ends)
    got = completed(steps, {**HOME, "battery_capacity_kwh": 0.0}, STEP)
    assert got[dd.SOLAR_KW].tolist() == pytest.approx([0.0, NAN, 2.0], nan_ok=True)
    assert got[dd.LOAD_TOTAL].tolist() == pytest.approx([0.4, NAN, 1.0], nan_ok=True)
    no_pv = completed(steps, {**HOME, "pv_capacity_kw": 0.0, "battery_capacity_kwh": 0.0}, STEP)
    assert no_pv[dd.SOLAR_KW].tolist() == [0.0, 0.0, 2.0]
    unmeasured = completed(steps.assign(**{dd.SOLAR_KW: NAN}), HOME, STEP)  # no PV reading at all says nothing of it
    assert unmeasured[dd.SOLAR_KW].isna().all()


def test_nights_of_a_logger_that_was_off_stay_unknown():
    """An inverter's file alone, silent each night: its nights are 0. Three days with no
    reading of any meter are a logger that was off: their nights stay unknown, or they would
    count as PV measured (a day of readings two years after the rest passed for two years of
    PV to train on). A grid meter that read through a long run vouches for its nights."""
    ends = pd.date_range("2024-06-10T07:00Z", "2024-06-20T07:00Z", freq=STEP, inclusive="left")
    local = ends.tz_convert(HOME["timezone"])
    day = (local.hour >= 6) & (local.hour < 20)
    pv = np.where(day, 1.0, NAN)
    off = (ends >= pd.Timestamp("2024-06-13T07:00Z")) & (ends < pd.Timestamp("2024-06-16T07:00Z"))
    pv[off] = NAN
    got = completed(pd.DataFrame({dd.SOLAR_KW: pv}, index=ends), HOME, STEP)[dd.SOLAR_KW]
    night = ~day & (local.hour < 4)
    apart = (ends < pd.Timestamp("2024-06-12T07:00Z")) | (ends >= pd.Timestamp("2024-06-17T07:00Z"))  # nights of its own
    assert (got[night & apart] == 0.0).all() and got[night & apart].size > 0
    assert got[off].isna().all()
    metered = pd.DataFrame({dd.SOLAR_KW: pv, dd.NET_GRID_FLOW: 0.3}, index=ends)
    vouched = completed(metered, {**HOME, "battery_capacity_kwh": 0.0}, STEP)[dd.SOLAR_KW]
    midday = (local.hour >= 9) & (local.hour < 17)
    assert (vouched[night & off] == 0.0).all() and vouched[midday & off].isna().all()


def test_a_grid_s_energy_is_completed_where_its_power_was():
    """A feature grid's energy of a step whose load was completed is that load over the step;
    measured steps keep their own."""
    steps = pd.DataFrame({dd.LOAD_TOTAL: [NAN, 2.0], dd.NET_GRID_FLOW: [1.0, 1.0], dd.SOLAR_KW: [1.0, 1.0],
                          "load_kwh": [NAN, 0.4]}, index=pd.DatetimeIndex([NOON, NOON + STEP]))
    got = completed(steps, {**HOME, "battery_capacity_kwh": 0.0}, STEP)
    assert got["load_kwh"].tolist() == pytest.approx([0.5, 0.4])
    assert np.isnan(steps["load_kwh"].iloc[0])


def test_a_coarser_meter_s_reading_holds_for_every_step_of_its_interval():
    """An hourly utility meter at quarter-hour steps: each quarter hour of an hour is that
    hour's reading (the reading after it, whose interval holds it), not a gap; quarter hours
    no reading's interval holds (after the meter's last) stay gaps; the quarter-hourly
    inverter beside it is taken as it is."""
    stamps = pd.date_range("2024-06-15T17:00Z", periods=9, freq="15min")
    hours = [0, 4, 8]  # the meter's readings at 17:00, 18:00 and 19:00, whose row is then left out
    readings = pd.DataFrame({dd.TS: stamps, dd.NET_GRID_FLOW: NAN, dd.SOLAR_KW: np.linspace(2.0, 2.8, 9)})
    readings.loc[hours, dd.NET_GRID_FLOW] = [0.5, 1.0, 2.0]
    readings = readings.drop(index=[8]).reset_index(drop=True)  # 19:00: no reading at all
    got = site_steps(readings, {**HOME, "battery_capacity_kwh": 0.0}, STEP)
    assert got[dd.NET_GRID_FLOW].tolist() == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, NAN, NAN, NAN], nan_ok=True)
    assert got[dd.SOLAR_KW].tolist() == pytest.approx(np.linspace(2.0, 2.7, 8).tolist())
    assert got[dd.LOAD_TOTAL].iloc[1:5].tolist() == pytest.approx([1.0 + 2.25] * 4)  # the hour's balance


def test_an_hourly_grid_meter_beside_a_quarter_hourly_inverter_balances_over_the_hour():
    """A flat 1 kW house under passing clouds: the hourly grid flow is 1 kW less the hour's
    mean PV. The quarter hours' load is the hour's balance, 1 kW in each, not the hour's flow
    plus each quarter hour's PV (0.4, 1.6, 0.4, 1.6 kW), which would print the clouds on the
    house load."""
    quarters = pd.date_range(NOON + STEP, periods=4, freq="15min")
    pv = pd.DataFrame({dd.TS: quarters, dd.SOLAR_KW: [2.0, 0.8, 2.0, 0.8]})
    grid = pd.DataFrame({dd.TS: quarters[-1:], dd.NET_GRID_FLOW: [1.0 - 1.4]})
    earlier = pd.DataFrame({dd.TS: [NOON], dd.NET_GRID_FLOW: [1.0 - 1.4], dd.SOLAR_KW: [1.4]})  # the hour before's end
    readings = pd.concat([earlier, pv, grid], ignore_index=True).groupby(dd.TS, as_index=False).first()
    steps = site_steps(readings, {**HOME, "battery_capacity_kwh": 0.0}, STEP)
    assert steps[dd.LOAD_TOTAL].loc[quarters].tolist() == pytest.approx([1.0] * 4)
    assert steps[dd.SOLAR_KW].loc[quarters].tolist() == pytest.approx([2.0, 0.8, 2.0, 0.8])  # the PV is as measured


@pytest.mark.parametrize("declared,filled,named", [
    ({}, (dd.NET_GRID_FLOW, dd.SOLAR_KW), ["10 kWh battery the site declares (battery_power_kw, positive when charging; "
                                          'a battery not installed yet is declared "battery": null, and tried with '
                                          "run_optimizer.py --backtest --battery-kwh KWH --battery-kw KW)"]),
    ({}, (dd.NET_GRID_FLOW,), ["PV of the array the site declares (solar_generation_kw)", "(battery_power_kw"]),
    ({"battery_capacity_kwh": 0.0}, (dd.SOLAR_KW,), ["grid flow (net_grid_flow_kw, positive when importing)"]),
    ({"battery_capacity_kwh": NAN}, (dd.NET_GRID_FLOW, dd.SOLAR_KW),
     ["the battery's power (battery_power_kw, positive when charging), or a site file declaring none"]),
    ({"battery_capacity_kwh": 0.0, "pv_capacity_kw": NAN}, (dd.NET_GRID_FLOW,),
     ["the PV (solar_generation_kw), or a site file declaring none"]),
])
def test_a_load_the_balance_cannot_give_names_the_meter_to_import(declared, filled, named):
    """A home with a battery whose log was left out: the reason names the battery's power, not
    the load or the grid flow its owner already imported."""
    readings = pd.DataFrame({dd.TS: [NOON], **{c: [1.0 if c in filled else NAN] for c in STEP_COLUMNS}})
    site = {**HOME, **declared}
    lacking = balance_lacks(filled_columns(readings), site)
    assert len(lacking) == len(named) and all(part in said for part, said in zip(named, lacking, strict=True))
    reason = no_load_reason(filled_columns(readings), site)
    assert reason.startswith("none measured (home_load_total_load_kw), and its balance needs ")
    assert all(part in reason for part in named) and "run_cloud_sync.py --import FILE" in reason
    assert np.isnan(completed(readings.set_index(dd.TS), site, STEP)[dd.LOAD_TOTAL].iloc[0])  # as the jobs find it


def test_a_balance_below_zero_everywhere_says_the_meters_disagree():
    readings = pd.DataFrame({dd.TS: [NOON], dd.LOAD_TOTAL: [NAN], dd.NET_GRID_FLOW: [-3.0], dd.SOLAR_KW: [2.0]})
    site = {**HOME, "battery_capacity_kwh": 0.0}
    assert balance_lacks(filled_columns(readings), site) == [] and balance_formula(site) == "grid flow + PV"
    assert "balance of its meters (grid flow + PV) is below zero" in no_load_reason(filled_columns(readings), site)
    assert np.isnan(completed(readings.set_index(dd.TS), site, STEP)[dd.LOAD_TOTAL].iloc[0])


def test_an_hourly_meter_half_an_hour_off_utc_keeps_its_hours():
    """Kolkata is UTC+5:30: a meter reading on the local hour stamps :30 UTC. Steps counted
    from UTC's midnight cut each of its hours in two; the recorded backtest of such a home
    found no reading at its steps and refused it, and an hourly plan at local midnight began
    at 23:30 the day before, in the month before."""
    stamps = pd.date_range("2024-02-28T19:30Z", periods=30, freq="1h")  # 01:00 IST onwards
    readings = pd.DataFrame({dd.TS: stamps, dd.LOAD_TOTAL: np.arange(30, dtype=float)})
    hourly = per_step(readings, dd.LOAD_TOTAL, pd.Timedelta(hours=1), "Asia/Kolkata")
    assert (hourly.index == stamps).all() and hourly.tolist() == list(range(30))
    midnight = pd.Timestamp("2024-03-01 00:00", tz="Asia/Kolkata").tz_convert("UTC")
    assert local_floor(midnight, pd.Timedelta(hours=1), "Asia/Kolkata") == midnight
    assert local_floor(midnight + pd.Timedelta(minutes=59), pd.Timedelta(hours=1), "Asia/Kolkata") == midnight
    # A zone a whole number of hours off UTC keeps UTC's steps.
    noon = pd.Timestamp("2024-07-01T10:45Z")
    assert local_floor(noon, pd.Timedelta(hours=1), "Europe/Berlin") == pd.Timestamp("2024-07-01T10:00Z")
