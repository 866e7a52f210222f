"""PV in clear-sky index units: 0 at night, back to kW exactly, features from the past only, and
one index of the same readings wherever it is taken."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import real_data
from cloud.feature_engineering.physics import CLEARSKY_KW, CLEARSKY_RATIO, physics_features, solar_config
from cloud.forecasting import clear_sky_index as csi
from cloud.forecasting import conformal
from cloud.forecasting import design as dz
from cloud.forecasting.models import LightGBMForecaster
from cloud.forecasting.targets import SOLAR_KW
from cloud.forecasting.weather import NoWeatherForecast
from cloud.live.weather import pv_clear_sky_index
from cloud.optimization.pv_forecast import recent_clear_sky_index
from der_core import der_data as dd
from der_physics.solar import clearsky_ac_kw
from tests.forecast_helpers import fleet, histories


def test_index_and_back_is_the_measured_output_by_day_and_zero_at_night():
    clear = np.array([0.0, 0.005, 0.5, 2.0, 3.0])
    up = csi.sun_up(clear, inverter_kw=3.0)
    measured = np.array([0.01, 0.004, 0.4, 1.0, 3.3])
    index = csi.index_of(measured, clear, up)
    assert up.tolist() == [False, False, True, True, True]
    assert np.isnan(index[:2]).all()
    np.testing.assert_allclose(csi.to_kw(index, clear, up), [0.0, 0.0, 0.4, 1.0, 3.3])
    assert csi.to_kw(np.full((5, 3), 1.0), clear, up)[:2].tolist() == [[0.0] * 3] * 2
    assert csi.index_of(np.array([100.0]), np.array([1.0]), np.array([True]))[0] == csi.MAX_RATIO


def test_same_time_quantiles_read_only_the_same_position_on_earlier_days():
    per_day, days = 4, 3
    index = np.arange(5 * per_day, dtype="float64")
    median = csi.same_time_quantiles(index, per_day, days, (0.5,))[0]
    assert median[13] == 9.0  # positions 13, 9, 5
    assert np.isnan(csi.same_time_quantiles(np.full(8, np.nan), per_day, days, (0.5,))).all()
    changed = index.copy()
    changed[14:] = -1.0  # the future of position 13
    assert csi.same_time_quantiles(changed, per_day, days, (0.5,))[0][13] == 9.0


@pytest.mark.parametrize("days", [1, 3, 7, 28])
def test_the_quantiles_are_numpys_to_the_last_bit(days):
    """The same numbers as ``np.nanquantile`` on columns with and without gaps, all-NaN ones
    included, at the levels the design rows read and at both ends."""
    rng = np.random.default_rng(days)
    stack = rng.random((days, 3000))
    stack[rng.random(stack.shape) < 0.3] = np.nan
    stack[:, :40] = np.nan
    stack[:, 40:80] = 0.25  # ties
    levels = (0.5, 0.8, 0.1, 0.9, 0.0, 1.0)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # numpy warns of the all-NaN columns
        expected = np.nanquantile(stack, levels, axis=0)
    np.testing.assert_array_equal(csi.nan_quantiles(stack, levels), expected)


@pytest.fixture(scope="module")
def pv_rows():
    history = histories(*fleet(1, 20, seed=8))[0]
    positions = dz.issue_positions(history, pd.Timedelta(hours=12), 96)
    rows = dz.design_matrix(history, SOLAR_KW, positions, 96, NoWeatherForecast())
    return history, rows[np.isfinite(rows[dz.Y])].reset_index(drop=True)


def test_the_index_features_describe_the_past_days_at_the_targets_time_of_day(pv_rows):
    history, rows = pv_rows
    row = rows[rows[dz.DAYTIME] & (rows[dz.HORIZON_STEPS] == 48)].iloc[-1]
    then = row[dz.TARGET_TS] - pd.Timedelta(days=1)
    clear_then = clearsky_ac_kw(solar_config(history.site), pd.DatetimeIndex([then]))[0]
    assert row[dz.KT_LAG_DAY] == pytest.approx(min(history.grid[dd.SOLAR_KW][then] / clear_then, csi.MAX_RATIO))
    assert 0.0 <= row[dz.KT_MEDIAN_SEASON] <= row[dz.KT_HIGH_SEASON] <= csi.MAX_RATIO
    assert rows.loc[~rows[dz.DAYTIME], dz.KT_LAG_DAY].isna().mean() > 0.5  # sun down yesterday: no index


def test_the_clearness_of_the_last_hours_is_the_index_of_that_span(pv_rows):
    """The design rows' clearness of the last hour, three hours and day before issue is
    ``span_index`` of those readings: one index rule for a span, wherever it is taken."""
    history, rows = pv_rows
    pv = history.grid[dd.SOLAR_KW]
    clear = clearsky_ac_kw(solar_config(history.site), pv.index)
    up = csi.sun_up(clear, solar_config(history.site).inverter_limit_kw)
    checked = 0
    for issued in rows[dz.ISSUED_AT].unique()[-6:]:
        row = rows[rows[dz.ISSUED_AT] == issued].iloc[0]
        end = pv.index.get_loc(issued) + 1
        for column, steps in [(dz.KT_LAST_HOUR, 4), (dz.KT_LAST_3H, 12), (dz.CLEARNESS_LAST_DAY, 96)]:
            span = slice(end - steps, end)
            wanted = csi.span_index(pv.to_numpy()[span], clear[span], up[span])
            if np.isnan(wanted):
                assert np.isnan(row[column])
            else:
                assert row[column] == pytest.approx(wanted, rel=1e-9)
                checked += 1
    assert checked >= 6  # daytime issues among them: the spans hold sun-up readings


def test_the_pv_model_forecasts_zero_with_the_sun_down(pv_rows):
    _, rows = pv_rows
    model = LightGBMForecaster(0.0, {"n_estimators": 5, "n_jobs": 1}, clear_sky_index=True)
    pred = model.fit(rows, rows[dz.Y].to_numpy(dtype="float64")).predict(rows)
    night = ~rows[dz.DAYTIME].to_numpy(dtype=bool)
    assert night.any() and (pred[night] == 0.0).all()
    assert (pred[~night, 1] > 0).mean() > 0.9


def test_a_saved_pv_model_with_its_band_predicts_the_same_after_loading(pv_rows, tmp_path):
    _, rows = pv_rows
    model = LightGBMForecaster(0.0, {"n_estimators": 5, "n_jobs": 1}, clear_sky_index=True)
    model.fit(rows, rows[dz.Y].to_numpy(dtype="float64")).band = conformal.Band(0.3, -0.1)
    model.save(tmp_path)
    back = LightGBMForecaster.load(tmp_path)
    assert back.band == model.band and back.views == model.views
    np.testing.assert_array_equal(back.predict(rows), model.predict(rows))


def test_features_planner_and_stored_issues_take_one_index_of_the_same_readings():
    """One day of real measured PV (PVDAQ system 50): the features' clear-sky ratio, the
    forecasters' index, a PV-forecast issue's index of the same power and the planner's
    persisted index of the day all divide by one clear sky under one sun-up rule."""
    pv = real_data.pv_series()["2013-07-10T06:15Z":"2013-07-11T06:00Z"]
    system = solar_config(real_data.pv_site())
    nothing = pd.Series(np.nan, index=pv.index)
    features = physics_features(pv.index, pv, nothing, nothing, system)
    ratio, clear = features[CLEARSKY_RATIO].to_numpy(), features[CLEARSKY_KW].to_numpy()
    up = csi.sun_up(clear, system.inverter_limit_kw)
    assert len(pv) == 96 and pv.notna().all() and 40 < up.sum() < 70
    np.testing.assert_array_equal(ratio[up], csi.index_of(pv.to_numpy(), clearsky_ac_kw(system, pv.index), up)[up])
    assert (ratio[~up] == 0.0).all()
    np.testing.assert_array_equal(pv_clear_sky_index(system, pv.index, pv.to_numpy()), ratio)
    persisted = recent_clear_sky_index(system, pv, pv.index[-1])
    assert 0.3 < persisted < 1.2
    assert persisted == pytest.approx(np.average(ratio[up], weights=clear[up]), rel=1e-12)


def test_no_pv_quantile_exceeds_the_declared_array_or_what_it_made_the_day_before(pv_rows):
    """However far a calibration slice moves the band (a snowed-in week shrinks the bands it
    measures misses against), P90 stays within what the array can make."""
    _, rows = pv_rows
    model = LightGBMForecaster(0.0, {"n_estimators": 5, "n_jobs": 1}, clear_sky_index=True)
    model.fit(rows, rows[dz.Y].to_numpy(dtype="float64")).band = conformal.Band(0.0, 14.0)
    pred = model.predict(rows)
    ceiling = np.fmax(rows[dz.CAPACITY], rows[dz.MAX_LAST_DAY]).to_numpy()
    assert (pred[:, 2] <= ceiling + 1e-9).all() and (pred[:, 2] >= ceiling - 1e-9).any()
    assert (pred[:, 0] <= pred[:, 1]).all() and (pred[:, 1] <= pred[:, 2]).all()
