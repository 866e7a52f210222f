"""The design rows: inputs at issue time only, lags where they belong, adaptive targets."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from cloud.forecasting import design as dz
from cloud.forecasting.targets import (
    LOAD_KW,
    PRICE_PER_KWH,
    SOLAR_KW,
    TARGET_COLUMNS,
    availability,
)
from cloud.forecasting.weather import (
    CsvWeatherForecast,
    NoWeatherForecast,
    SimulatedWeatherForecast,
)
from der_core import der_data as dd
from der_core.config import site_record
from der_core.errors import ConfigError
from tests.forecast_helpers import STEP, fleet, histories

HORIZON = 96


@pytest.fixture(scope="module")
def one_site():
    configs, readings = fleet(1, 12, seed=11)
    return configs, readings, histories(configs, readings)[0]


def _rows_at(history, target, tau, weather=None):
    position = int(np.flatnonzero(history.grid.index == tau)[0])
    return dz.design_matrix(history, target, np.array([position]), HORIZON, weather or SimulatedWeatherForecast())


@pytest.mark.parametrize("issued", ["2024-04-10 06:00", "2024-04-10 15:00"])  # night, and mid-morning at the site
@pytest.mark.parametrize("target", list(TARGET_COLUMNS))
def test_changing_everything_after_issue_time_changes_no_feature(one_site, target, issued):
    configs, readings, history = one_site
    tau = pd.Timestamp(issued, tz="UTC")
    before = _rows_at(history, target, tau)
    future = readings[dd.TS] > tau
    scrambled = readings.copy()
    rng = np.random.default_rng(3)
    for column in set(dd.NUMERIC_COLUMNS) - set(dd.INT_COLUMNS):
        scrambled.loc[future, column] = rng.uniform(-50, 50, int(future.sum()))
    scrambled.loc[future, dd.TOU_PERIOD] = "peak"
    after = _rows_at(dz.site_history(scrambled, site_record(configs[0]), STEP), target, tau)
    features = list(dz.FEATURES)
    pd.testing.assert_frame_equal(before[features], after[features])
    assert not np.allclose(before[dz.Y], after[dz.Y])  # the truth did change: the test has teeth
    if issued.endswith("15:00"):  # the sun is up: the last hours' PV clearness is a number, not NaN
        assert before[[dz.KT_LAST_HOUR, dz.KT_LAST_3H]].notna().all().all()


def test_lags_are_the_newest_past_same_time_of_day(one_site):
    _, _, history = one_site
    tau = pd.Timestamp("2024-04-10 06:00", tz="UTC")
    rows = _rows_at(history, LOAD_KW, tau)
    load = history.grid[dd.LOAD_TOTAL]
    for _, row in rows.iloc[[0, 40, 95]].iterrows():
        target = row[dz.TARGET_TS]
        assert row[dz.LAG_DAY] == load[target - pd.Timedelta(days=1)]
        assert row[dz.LAG_WEEK] == load[target - pd.Timedelta(days=7)]
        assert row[dz.LAST] == load[tau]
        assert target - pd.Timedelta(days=1) <= tau
    assert rows[dz.HORIZON_STEPS].tolist() == list(range(1, HORIZON + 1))
    assert rows[dz.TARGET_TS].iloc[-1] == tau + pd.Timedelta(days=1)


def test_horizons_beyond_a_day_take_lags_two_days_back(one_site):
    _, _, history = one_site
    tau = pd.Timestamp("2024-04-10 06:00", tz="UTC")
    position = int(np.flatnonzero(history.grid.index == tau)[0])
    rows = dz.design_matrix(history, LOAD_KW, np.array([position]), 2 * HORIZON, NoWeatherForecast())
    far = rows[rows[dz.HORIZON_STEPS] == HORIZON + 4].iloc[0]
    assert far[dz.LAG_DAY] == history.grid[dd.LOAD_TOTAL][far[dz.TARGET_TS] - pd.Timedelta(days=2)]


def test_weather_forecast_error_grows_with_lead_time(one_site):
    _, _, history = one_site
    site = history.site
    targets = pd.date_range("2024-04-11", periods=96 * 3, freq=STEP)
    forecaster = SimulatedWeatherForecast()
    near = forecaster.forecast(site, targets - pd.Timedelta(hours=1), targets)
    far = forecaster.forecast(site, targets - pd.Timedelta(hours=24), targets)
    truth = forecaster.forecast(site, targets, targets)  # zero lead: the smallest error
    near_err = np.abs(near["clear_sky_index"] - truth["clear_sky_index"]).mean()
    far_err = np.abs(far["clear_sky_index"] - truth["clear_sky_index"]).mean()
    assert far_err > near_err > 0


def test_csv_weather_forecast_uses_only_forecasts_published_by_issue_time(tmp_path):
    path = tmp_path / "wx.csv"
    pd.DataFrame({
        "issued_at": ["2024-04-10T00:00Z", "2024-04-10T12:00Z"],
        "target_ts": ["2024-04-11T00:00Z", "2024-04-11T00:00Z"],
        "temp_air_celsius": [10.0, 12.0], "clear_sky_index": [0.5, 0.7],
    }).to_csv(path, index=False)
    forecaster = CsvWeatherForecast(path)
    target = pd.DatetimeIndex([pd.Timestamp("2024-04-11", tz="UTC")] * 3)
    issued = pd.DatetimeIndex(["2024-04-09T23:00Z", "2024-04-10T06:00Z", "2024-04-10T13:00Z"])
    seen = forecaster.forecast({"device_id": "x"}, issued, target)
    assert np.isnan(seen["temp_air_celsius"][0])
    assert seen["temp_air_celsius"].tolist()[1:] == [10.0, 12.0]


@pytest.mark.parametrize("column, value, said", [
    ("issued_at", "2024-04-10 00:00", "issued_at '2024-04-10 00:00' on line 3: expected an ISO 8601 time with its offset"),
    ("target_ts", "tomorrow", "target_ts 'tomorrow' on line 3: expected an ISO 8601 time with its offset"),
    ("clear_sky_index", "inf", "clear_sky_index 'inf' on line 3: expected a finite number"),
    ("temp_air_celsius", "warm", "temp_air_celsius 'warm' on line 3: expected a finite number"),
])
def test_a_weather_file_row_without_an_offset_or_a_number_is_refused_in_one_line(tmp_path, column, value, said):
    """A service's local times read as UTC would shift every forecast by hours, and a text or
    infinite value would reach the models as a feature: the file is refused, naming the row."""
    rows = pd.DataFrame({"issued_at": ["2024-04-10T00:00Z"] * 2, "target_ts": ["2024-04-11T00:00+02:00"] * 2,
                         "temp_air_celsius": ["10.5", "11"], "clear_sky_index": ["0.5", ""]})
    rows.loc[1, column] = value
    rows.to_csv(tmp_path / "wx.csv", index=False)
    with pytest.raises(ConfigError, match="^weather forecast file .*wx.csv: " + re.escape(said)):
        CsvWeatherForecast(tmp_path / "wx.csv")
    rows.loc[1, column] = rows.loc[0, column]
    rows.to_csv(tmp_path / "wx.csv", index=False)
    seen = CsvWeatherForecast(tmp_path / "wx.csv").forecast(
        {"device_id": "x"}, pd.DatetimeIndex(["2024-04-10T06:00Z"]), pd.DatetimeIndex(["2024-04-10T22:00Z"]))
    assert seen["temp_air_celsius"].tolist() == [float(rows.loc[1, "temp_air_celsius"])]  # 00:00+02:00 is 22:00Z


def test_a_site_with_only_load_can_train_load_and_says_why_not_the_rest(one_site):
    configs, readings, _ = one_site
    load_only = readings.copy()
    for column in dd.NUMERIC_COLUMNS:
        if column != dd.LOAD_TOTAL:
            load_only[column] = np.nan
    load_only[dd.TOU_PERIOD] = "nan"
    site = {**site_record(configs[0]), "pv_capacity_kw": 0.0}
    history = dz.site_history(load_only, site, STEP)
    checks = {t: availability(t, history.device_id, history.grid, site, STEP, 7) for t in TARGET_COLUMNS}
    assert checks[LOAD_KW].ok
    assert checks[SOLAR_KW].reason == "no PV system (pv_capacity_kw is 0 or PV output never above 0)"  # PV 0: none declared
    assert checks[PRICE_PER_KWH].reason == f"no {dd.PRICE} readings"
    measured = availability(SOLAR_KW, history.device_id, dz.site_history(readings, site, STEP).grid, site, STEP, 7)
    highest = readings[dd.SOLAR_KW].max()
    assert measured.reason == (f"{dd.SOLAR_KW} reaches {highest:.2f} kW but no PV system is declared (pv_capacity_kw "
                               "is 0): declare the array (the site file's pv) to forecast it")  # PV measured, none declared
    short = availability(LOAD_KW, history.device_id, history.grid, site, STEP, 30)
    assert short.reason == f"only 12.0 days of {dd.LOAD_TOTAL}; at least 30 are needed"
    rows = dz.design_matrix(history, LOAD_KW, dz.issue_positions(history, pd.Timedelta(hours=6), HORIZON)[:2],
                            HORIZON, SimulatedWeatherForecast())
    assert rows[dz.Y].notna().all() and rows[list(dz.TOU)].isna().all().all()


def test_pv_logged_on_its_last_days_only_is_counted_by_its_daylight_not_its_filled_nights(one_site):
    """Twelve days of load, PV logged on the last four: the grid holds PV 0 through every
    night the load meter read, so counting every step would find eight days of PV."""
    configs, readings, _ = one_site
    late = readings.copy()
    late.loc[late[dd.TS] < late[dd.TS].max() - pd.Timedelta(days=4), dd.SOLAR_KW] = np.nan
    site = site_record(configs[0])
    history = dz.site_history(late, site, STEP)
    assert np.isfinite(history.grid[dd.SOLAR_KW]).sum() * STEP > pd.Timedelta(days=7)  # the filled nights
    check = availability(SOLAR_KW, history.device_id, history.grid, site, STEP, 7)
    assert check.reason == f"only 4.0 days of {dd.SOLAR_KW} by daylight; at least 7 are needed"
    assert availability(SOLAR_KW, history.device_id, dz.site_history(readings, site, STEP).grid, site, STEP, 7).ok


def test_a_target_is_the_reading_whose_interval_holds_it_not_the_one_carried_into_it(one_site):
    """A half-hourly meter at quarter-hour steps: the features at each step see the newest
    reading (carried forward), but a quarter hour's target is the reading whose interval
    holds it, the half hour after it: trained on the carried value, a model would learn the
    load a step late."""
    configs, readings, _ = one_site
    half_hourly = readings[(readings[dd.TS].dt.minute % 30) == 0]
    history = dz.site_history(half_hourly, site_record(configs[0]), STEP)
    tau = pd.Timestamp("2024-04-10 06:00", tz="UTC")
    rows = _rows_at(history, LOAD_KW, tau, NoWeatherForecast())
    measured = half_hourly.set_index(dd.TS)[dd.LOAD_TOTAL]
    holding = rows[dz.TARGET_TS].dt.ceil("30min")
    assert rows[dz.Y].to_numpy() == pytest.approx(measured.reindex(holding).to_numpy())
    quarter = (rows[dz.TARGET_TS].dt.minute % 30 != 0).to_numpy()
    carried = history.grid[dd.LOAD_TOTAL].reindex(rows[dz.TARGET_TS][quarter]).to_numpy()
    before = measured.reindex(rows[dz.TARGET_TS][quarter] - STEP).to_numpy()
    assert carried == pytest.approx(before)  # what the features know at that quarter hour
    assert not np.allclose(carried, rows[dz.Y].to_numpy()[quarter])
