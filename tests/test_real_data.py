"""The real measured series shipped inside PyPI packages load as real, plausible power: PV
is zero at night and peaks near solar noon in summer and winter alike (its clock repaired
for daylight saving), and household load is positive with a daily routine, the package's
copied-from-yesterday fill taken back out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import real_data
from cloud.feature_engineering.physics import solar_config
from cloud.forecasting import design as dz
from der_core import der_data as dd
from der_physics.solar import clearsky_ac_kw


@pytest.fixture(scope="module")
def pv():
    return real_data.pv_series()


@pytest.fixture(scope="module")
def load():
    return real_data.load_series()


def _midday_minutes(series: pd.Series) -> pd.Series:
    """Each day's output-weighted mean time of day, at the middle of each interval, in the
    site's standard time all year (a UTC day would cut Colorado's summer evenings in two)."""
    series = series.tz_convert("Etc/GMT+7")
    minutes = series.index.hour * 60 + series.index.minute - 7.5
    weighted = pd.Series(series.to_numpy() * minutes, index=series.index)
    by_day = series.index.floor("D")
    return weighted.groupby(by_day).sum() / series.groupby(by_day).sum()


def test_sources_name_their_installed_package_and_file():
    for source in (real_data.PV_SOURCE, real_data.PV_WEATHER_SOURCE, real_data.LOAD_SOURCE):
        assert source.path().is_file()
        assert source.version in source.describe() and source.package in source.describe()


def test_pv_is_measured_kw_in_utc_over_two_and_a_half_years(pv):
    assert str(pv.index.tz) == "UTC" and pv.index.is_monotonic_increasing and not pv.index.has_duplicates
    assert pv.index[0] < pd.Timestamp("2011-05-01", tz="UTC") and pv.index[-1] > pd.Timestamp("2013-12-01", tz="UTC")
    assert (pd.Series(pv.index).diff().dropna() == real_data.STEP).mean() > 0.99
    assert pv.min() >= 0 and 2.0 < pv.max() < 5.0  # a few-kW array, in kW not W
    daily = pv.resample("D").sum() * 0.25
    assert daily.std() / daily.mean() > 0.25  # weather: measured days differ, as no clear-sky model does


def test_pv_is_zero_at_night_and_peaks_at_solar_noon_all_year(pv):
    site = real_data.pv_site(pv)
    clear = pd.Series(clearsky_ac_kw(solar_config(site), pv.index), index=pv.index)
    # Night: no clear-sky output for half an hour either side (a 15-minute mean straddles dusk).
    night = clear.rolling(5, center=True, min_periods=1).max() == 0
    assert night.mean() > 0.3 and pv[night].max() < 0.01 * site["pv_capacity_kw"]
    offset = (_midday_minutes(pv.dropna()) - _midday_minutes(clear[pv.notna()])).dropna()
    assert offset.abs().median() < 30  # minutes from the sun's own midday, all year
    # Across each daylight-saving change the midday stays put: a wall clock read as a fixed
    # offset moves it by an hour there.
    days = pd.Series(offset.index, index=offset.index)
    offsets = days.map(lambda day: day.tz_convert("America/Denver").utcoffset())
    changes = days[(offsets != offsets.shift()) & offsets.shift().notna()]
    assert len(changes) == 5
    for change in changes:
        after = offset[change + pd.Timedelta(days=1):change + pd.Timedelta(days=15)].median()
        before = offset[change - pd.Timedelta(days=15):change - pd.Timedelta(days=1)].median()
        assert abs(after - before) < 20, f"midday moves {after - before:.0f} min across {change:%Y-%m-%d}"


def test_load_is_positive_kw_on_a_regular_utc_grid_with_a_daily_routine(load):
    assert str(load.index.tz) == "UTC" and (pd.Series(load.index).diff().dropna() == real_data.STEP).all()
    assert load.index[0] < pd.Timestamp("2007-01-01", tz="UTC") and load.index[-1] > pd.Timestamp("2010-11-01", tz="UTC")
    assert load.min() > 0 and 0.5 < load.mean() < 3.0
    local = load.tz_convert(real_data.LOAD_LOCATION["timezone"])
    by_hour = local.groupby(local.index.hour).mean()
    assert by_hour[[19, 20, 21]].mean() > 2.5 * by_hour[[3, 4, 5]].mean()
    assert by_hour[[7, 8]].mean() > 2 * by_hour[[3, 4]].mean()


def test_load_minutes_the_package_copied_from_the_day_before_are_missing(load):
    # The original data set has no readings from 2007-04-28 00:21 to 2007-04-30 14:23 (Paris time).
    gap = load[pd.Timestamp("2007-04-28 06:00", tz="Europe/Paris"):pd.Timestamp("2007-04-30 12:00", tz="Europe/Paris")]
    assert len(gap) > 200 and gap.isna().all()
    assert 0.005 < load.isna().mean() < 0.03
    same_as_yesterday = (load == load.shift(freq=pd.Timedelta(days=1)).reindex(load.index)).mean()
    assert same_as_yesterday < 0.01


def test_readings_put_the_series_on_the_forecasting_grid(load):
    part = load["2008-01-01":"2008-01-10"]
    history = dz.site_history(real_data.readings("uci-sceaux", part), real_data.load_site(), real_data.STEP)
    grid = history.grid[dd.LOAD_TOTAL].reindex(part.dropna().index)
    np.testing.assert_allclose(grid.to_numpy(), part.dropna().to_numpy())
    assert (history.grid[dd.SOLAR_KW] == 0.0).all()  # the household declares no PV
