"""The same local clock time on earlier days: the naive load forecast and the demand-response
baseline read a household's routine by its clock across daylight-saving changes, through one
lookup."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.dr import baseline as b
from cloud.optimization import forecasters as fc
from cloud.optimization import reserve, sessions
from cloud.optimization.same_time import earlier, values_at

STEP = pd.Timedelta(minutes=15)
#: (zone, local midnight of a day whose clock changes): spring forward and autumn back.
CHANGES = [
    ("Europe/Berlin", "2024-03-31"),
    ("Europe/Berlin", "2024-10-27"),
    ("America/Los_Angeles", "2024-03-10"),
    ("America/Los_Angeles", "2024-11-03"),
]


def _local_midnight(day: str, zone: str, days_later: int = 0) -> pd.Timestamp:
    return (pd.Timestamp(day) + pd.Timedelta(days=days_later)).tz_localize(zone).tz_convert("UTC")


def _readings(zone: str, start: pd.Timestamp, end: pd.Timestamp, kw_at_slot: np.ndarray) -> pd.Series:
    """15-minute readings in UTC whose value is ``kw_at_slot`` of their local quarter-hour."""
    index = pd.date_range(start, end, freq=STEP)
    local = index.tz_convert(zone)
    return pd.Series(kw_at_slot[local.hour * 4 + local.minute // 15], index=index)


@pytest.mark.parametrize(("zone", "change_day"), CHANGES)
def test_the_naive_forecast_the_day_after_a_clock_change_keeps_the_morning_spike_at_its_local_time(zone, change_day):
    """A house whose load jumps to 3 kW at 07:00 local every morning: the day after the clock
    changes, the forecast has the spike at 07:00 local too, not an hour beside it."""
    kw_at_slot = np.full(96, 0.5)
    kw_at_slot[7 * 4] = 3.0
    issued_at = _local_midnight(change_day, zone, days_later=1)
    history = _readings(zone, issued_at - pd.Timedelta(days=14), issued_at, kw_at_slot)
    instants = pd.date_range(issued_at + STEP, periods=96, freq=STEP)
    forecast = fc.naive_load_kw(history, issued_at, instants, zone)
    local = instants.tz_convert(zone)
    at_seven = (local.hour == 7) & (local.minute == 0)
    np.testing.assert_allclose(forecast[at_seven], [3.0])
    np.testing.assert_allclose(forecast[~at_seven], 0.5)


@pytest.mark.parametrize(("zone", "change_day"), CHANGES)
def test_the_dr_baseline_and_the_naive_forecast_read_the_same_local_times(zone, change_day):
    """A routine that repeats by the local clock, issued at noon the day before the change for
    36 hours: the DR forecast baseline and the naive load forecast both return the routine,
    on the change's day as on the day before."""
    kw_at_slot = np.random.default_rng(3).uniform(0.2, 4.0, 96)
    issued_at = _local_midnight(change_day, zone) - pd.Timedelta(hours=12)
    history = _readings(zone, issued_at - pd.Timedelta(days=21), issued_at, kw_at_slot)
    instants = pd.date_range(issued_at + STEP, issued_at + pd.Timedelta(hours=36), freq=STEP)
    routine = _readings(zone, instants[0], instants[-1], kw_at_slot).to_numpy()

    table = history.to_frame("home")
    lags = b.same_type_lags(instants[0], zone, 5)
    baseline = b.same_step_mean(table, instants, ["home"], lags, zone)[0]
    forecast = fc.naive_load_kw(history, issued_at, instants, zone)
    np.testing.assert_allclose(baseline, routine)
    np.testing.assert_allclose(forecast, routine)


@pytest.mark.parametrize(("zone", "change_day"), CHANGES)
def test_a_routine_kept_by_the_clock_leaves_no_house_load_swing_across_a_clock_change(zone, change_day):
    """The reserve program's house-load residuals and the naive scenarios' replayed swings are
    departures from the same local time on earlier days: a house that repeats its day by the
    clock has none, in the weeks around a change as on any other."""
    kw_at_slot = np.random.default_rng(5).uniform(0.2, 4.0, 96)
    kw_at_slot[8:16] = kw_at_slot[8]  # 02:00 to 04:00 alike: a skipped 02:xx is read at 03:xx
    # The Saturday after: the change's Sunday is one of its weekend days' source days.
    issued_at = _local_midnight(change_day, zone, days_later=6) + pd.Timedelta(hours=1)
    history = _readings(zone, issued_at - pd.Timedelta(days=35), issued_at + pd.Timedelta(days=7), kw_at_slot)
    instants = pd.date_range(issued_at + STEP, issued_at + pd.Timedelta(hours=36), freq=STEP)

    model = reserve.SessionModel.from_readings(history, issued_at + pd.Timedelta(days=7), 7.0, zone)
    assert model.sessions_seen == 0
    np.testing.assert_allclose(model.residuals_kw, 0.0, atol=1e-12)
    found = sessions.load_scenarios_kw(history, issued_at, instants, 7.0, zone)
    np.testing.assert_allclose(found.extra_load_kw, 0.0, atol=1e-12)


@pytest.mark.parametrize(("zone", "change_day"), CHANGES)
def test_a_car_session_replayed_from_a_clock_change_s_day_keeps_its_local_time(zone, change_day):
    """A car that charges from 18:00 to 20:00 local every day, the change's Sunday too: every
    naive scenario of the following weekend replays it from 18:00 to 20:00 local, whichever
    weekend day it comes from."""
    kw_at_slot = np.full(96, 0.5)
    charging = np.zeros(96)
    charging[18 * 4 : 20 * 4] = 7.0
    issued_at = _local_midnight(change_day, zone, days_later=6) + pd.Timedelta(hours=1)  # the Saturday after, 01:00
    history = _readings(zone, issued_at - pd.Timedelta(days=14), issued_at, kw_at_slot + charging)
    instants = pd.date_range(issued_at + STEP, issued_at + pd.Timedelta(hours=36), freq=STEP)

    found = sessions.load_scenarios_kw(history, issued_at, instants, 7.0, zone)
    local = instants.tz_convert(zone)
    wanted = charging[local.hour * 4 + local.minute // 15]  # as the readings are stamped (_readings)
    assert found.extra_load_kw.shape[0] >= 2 and wanted.max() == 7.0
    for scenario in found.extra_load_kw:
        np.testing.assert_allclose(scenario, wanted, atol=1e-9)


@pytest.mark.parametrize(("zone", "day", "wanted"), [
    # The spring gap: 02:30 on the change's day never happened; an hour later, 03:30 local, stands in.
    ("Europe/Berlin", "2024-04-01T00:30Z", "2024-03-31T01:30Z"),
    # The autumn repeat: 02:30 came twice; the first, still in summer time, is taken.
    ("Europe/Berlin", "2024-10-28T01:30Z", "2024-10-27T00:30Z"),
    ("America/Los_Angeles", "2024-11-04T09:30Z", "2024-11-03T08:30Z"),
])
def test_a_clock_time_the_earlier_day_skipped_is_an_hour_later_and_one_it_repeated_the_first(zone, day, wanted):
    at = pd.DatetimeIndex([pd.Timestamp(day)])
    assert earlier(at, zone, 1)[0] == pd.Timestamp(wanted)
    series = pd.Series([1.0, 2.0], index=pd.DatetimeIndex([pd.Timestamp(wanted), pd.Timestamp(wanted) + pd.Timedelta(hours=1)]))
    assert values_at(series, at, 1, zone).tolist() == [[1.0]]


def test_one_lookup_serves_every_lag_and_every_column_with_nan_where_there_is_no_reading():
    index = pd.date_range("2024-06-01", periods=3, freq="D", tz="UTC")
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}, index=index)
    at = pd.DatetimeIndex([pd.Timestamp("2024-06-04", tz="UTC")])
    found = values_at(table, at, np.array([[1], [3], [4]]), "Europe/Berlin")
    assert found.shape == (3, 1, 2)
    np.testing.assert_array_equal(found[:, 0], [[3.0, 30.0], [1.0, 10.0], [np.nan, np.nan]])
