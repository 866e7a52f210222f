"""Feature engineering as pure functions: resampling aggregates, bounded causal gap filling,
calendar features in local time, past-only history features, physics proxies, and the
no-leakage property on simulated sites."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.feature_engineering import resample as rs
from cloud.feature_engineering import steps
from cloud.feature_engineering.calendar import calendar_features
from cloud.feature_engineering.history import lag_features, rolling_features
from cloud.feature_engineering.physics import (
    CLEARSKY_KW,
    CLEARSKY_RATIO,
    physics_features,
    solar_config,
)
from cloud.feature_engineering.pipeline import build_features, feature_names
from der_core import der_data as dd
from der_core.config import SimulatorConfig, site_record
from der_core.sites import site_configs
from der_physics.solar import clearsky_ac_kw
from tests.sim_helpers import readings as simulated
from tests.sync_fixtures import readings as synthetic

T0 = pd.Timestamp("2024-06-03T00:00:00Z")
MIN = pd.Timedelta(minutes=1)


def five_minute(steps: int, seed: int = 0) -> pd.DataFrame:
    """One site's synthetic readings at 5-minute steps, the first at T0 + 5 min."""
    return synthetic(devices=1, steps=steps, start=T0 + 5 * MIN, step_s=300, seed=seed)


# resampling -------------------------------------------------------------------------------
@pytest.mark.parametrize("step_min", [15, 30, 60])
@pytest.mark.parametrize("column", [dd.SOLAR_KW, dd.LOAD_TOTAL, dd.PRICE, dd.BATTERY_POWER, dd.PANEL_TEMP])
def test_power_price_and_temperature_are_step_means(step_min, column):
    raw = five_minute(48)
    grid = rs.resample_site(raw, step_min * MIN, pd.Timedelta(hours=1)).grid
    per_step = step_min // 5
    expected = raw[column].to_numpy().reshape(-1, per_step).mean(axis=1)
    np.testing.assert_allclose(grid[column].to_numpy(), expected, rtol=1e-12)
    assert grid.index[0] == T0 + step_min * MIN  # right-labelled: the step ending at T


@pytest.mark.parametrize("step_min", [15, 30, 60])
@pytest.mark.parametrize("column", [dd.BATTERY_SOC, dd.TOU_PERIOD])
def test_states_take_the_last_value_of_the_step(step_min, column):
    raw = five_minute(48)
    grid = rs.resample_site(raw, step_min * MIN, pd.Timedelta(hours=1)).grid
    expected = raw[column].to_numpy()[step_min // 5 - 1::step_min // 5]
    assert grid[column].tolist() == expected.tolist()


@pytest.mark.parametrize("step_min", [15, 60])
@pytest.mark.parametrize("energy, power, sign", [
    (rs.SOLAR_KWH, dd.SOLAR_KW, 0), (rs.LOAD_KWH, dd.LOAD_TOTAL, 0),
    (rs.IMPORT_KWH, dd.NET_GRID_FLOW, 1), (rs.EXPORT_KWH, dd.NET_GRID_FLOW, -1),
])
def test_energy_is_power_times_each_readings_interval_summed(step_min, energy, power, sign):
    raw = five_minute(48)
    grid = rs.resample_site(raw, step_min * MIN, pd.Timedelta(hours=1)).grid
    kw = raw[power].to_numpy()
    kw = kw if sign == 0 else np.clip(sign * kw, 0, None)
    kwh = kw * 5 / 60
    kwh[0] = np.nan  # the first reading's interval is unknown
    sums = pd.Series(kwh).groupby(np.arange(48) // (step_min // 5)).sum(min_count=1).to_numpy()
    np.testing.assert_allclose(grid[energy].to_numpy()[1:], sums[1:], rtol=1e-12)
    assert grid[rs.READINGS_IN_STEP].tolist() == [step_min / 5] * len(grid)


@pytest.mark.parametrize("gap_steps, max_gap_min, filled", [
    (1, 60, 1), (4, 60, 4), (5, 60, 4), (12, 60, 4), (3, 0, 0), (6, 30, 2),
])
def test_gap_filling_carries_forward_at_most_max_gap(gap_steps, max_gap_min, filled):
    raw = five_minute(96)
    bins = rs.grid_instants(raw[dd.TS], 15 * MIN)
    hole = bins.unique()[10:10 + gap_steps]
    kept = raw[~bins.isin(hole)]
    result = rs.resample_site(kept, 15 * MIN, max_gap_min * MIN)
    grid = result.grid
    assert len(grid) == 32 and (grid.index[1:] - grid.index[:-1] == 15 * MIN).all()
    before = grid.loc[hole[0] - 15 * MIN]
    inside = grid.loc[hole]
    assert inside[rs.FILLED].tolist() == [1.0] * filled + [0.0] * (gap_steps - filled)
    assert (inside[rs.READINGS_IN_STEP] == 0).all()
    assert (inside[dd.LOAD_TOTAL].iloc[:filled] == before[dd.LOAD_TOTAL]).all()
    assert inside[dd.LOAD_TOTAL].iloc[filled:].isna().all()
    assert inside[dd.TOU_PERIOD].iloc[:filled].tolist() == [before[dd.TOU_PERIOD]] * filled
    assert result.gaps == (rs.Gap(hole[0], hole[-1], gap_steps, filled, gap_steps - filled),)
    assert result.gaps[0].duration == (gap_steps - 1) * 15 * MIN


def test_a_site_without_gaps_reports_none_and_unsorted_input_is_fine():
    raw = five_minute(24)
    shuffled = raw.sample(frac=1.0, random_state=3)
    left = rs.resample_site(raw, 15 * MIN, pd.Timedelta(hours=1))
    right = rs.resample_site(shuffled, 15 * MIN, pd.Timedelta(hours=1))
    assert left.gaps == () and right.gaps == ()
    pd.testing.assert_frame_equal(left.grid, right.grid)


def _runs_of(values: np.ndarray, longest: int, seed: int) -> np.ndarray:
    """Sorted step keys cutting ``values`` into runs of 1 to ``longest`` rows."""
    sizes = np.random.default_rng(seed).integers(1, longest + 1, size=len(values))
    return np.repeat(np.arange(len(values)), sizes)[:len(values)]


@pytest.mark.parametrize("missing", ["none", "some NaN", "NaN and infinities", "mostly NaN"])
@pytest.mark.parametrize("longest_run", [3, 40])  # past eight values numpy sums pairwise
def test_step_aggregates_are_pandas_groupby_bit_for_bit(missing, longest_run):
    """Rebuilt rows must equal the ones a plain pandas groupby computes."""
    rng = np.random.default_rng(longest_run)
    values = rng.normal(size=(3000, 4)) * np.array([1e-3, 1.0, 7.0, 1e5])
    if missing != "none":
        values[rng.random(values.shape) < (0.9 if missing == "mostly NaN" else 0.05)] = np.nan
    if missing == "NaN and infinities":
        values[rng.integers(0, 3000, size=5), rng.integers(0, 4, size=5)] = [np.inf, -np.inf, np.inf, 1e308, -1e308]
    keys = _runs_of(values, longest_run, seed=1)
    starts = steps.run_starts(keys)
    grouped = pd.DataFrame(values).groupby(keys, sort=True)
    np.testing.assert_array_equal(steps.means(values, starts), grouped.mean().to_numpy())
    np.testing.assert_array_equal(steps.sums(values, starts), grouped.sum(min_count=1).to_numpy())
    last_rows = steps.last_present(~np.isnan(values[:, 0]), starts)
    last = np.where(last_rows >= 0, values[:, 0][last_rows], np.nan)
    np.testing.assert_array_equal(last, grouped[0].last().to_numpy())


def test_resample_refuses_several_sites_at_once():
    with pytest.raises(ValueError, match="one site"):
        rs.resample_site(synthetic(devices=2, steps=3), 15 * MIN, pd.Timedelta(hours=1))


# calendar ---------------------------------------------------------------------------------
@pytest.mark.parametrize("instant, zone, country, hour, dow, weekend, holiday", [
    ("2024-07-04T19:00Z", "America/Los_Angeles", "US", 12, 3, 0, 1),  # Independence Day, local noon
    ("2024-07-05T02:00Z", "America/Los_Angeles", "US", 19, 3, 0, 1),  # still the 4th locally
    ("2024-07-05T02:00Z", "Europe/Berlin", "DE", 4, 4, 0, 0),
    ("2024-12-25T06:00Z", "America/Los_Angeles", "US", 22, 1, 0, 0),  # Christmas Eve locally
    ("2024-12-25T06:00Z", "Europe/Berlin", "DE", 7, 2, 0, 1),
    ("2024-06-08T23:30Z", "Australia/Sydney", "AU", 9, 6, 1, 0),  # Sunday morning locally
    ("2024-01-25T23:30Z", "Australia/Sydney", "AU", 10, 4, 0, 1),  # Australia Day, local morning
])
def test_calendar_features_use_the_sites_local_time_and_holidays(instant, zone, country, hour, dow, weekend, holiday):
    index = pd.DatetimeIndex([pd.Timestamp(instant)])
    row = calendar_features(index, zone, country).iloc[0]
    assert (row["hour"], row["day_of_week"], row["is_weekend"], row["is_holiday"]) == (hour, dow, weekend, holiday)
    local = index.tz_convert(zone)[0]
    angle = 2 * np.pi * (local.hour + local.minute / 60) / 24
    assert row["hour_sin"] == pytest.approx(np.sin(angle)) and row["hour_cos"] == pytest.approx(np.cos(angle))


def test_cyclical_encodings_lie_on_the_unit_circle_and_wrap_at_midnight():
    index = pd.date_range("2024-03-30", "2024-04-01", freq="15min", tz="UTC")
    cal = calendar_features(index, "Europe/Berlin", "DE")  # crosses the spring DST change
    for a, b in (("hour_sin", "hour_cos"), ("dow_sin", "dow_cos"), ("doy_sin", "doy_cos")):
        np.testing.assert_allclose(cal[a] ** 2 + cal[b] ** 2, 1.0, atol=1e-12)
    before, after = cal.loc["2024-03-30T22:45Z"], cal.loc["2024-03-30T23:00Z"]  # 23:45 -> 00:00 local
    assert abs(before["hour_sin"] - after["hour_sin"]) < 0.07 and abs(before["hour_cos"] - after["hour_cos"]) < 0.07


@pytest.mark.parametrize("country", [None, "ZZ"])
def test_unknown_country_gives_unknown_holiday_not_false(country):
    cal = calendar_features(pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC"), "UTC", country)
    assert cal["is_holiday"].isna().all() and (cal["hour"] == [0, 1, 2, 3]).all()


# history ----------------------------------------------------------------------------------
@pytest.mark.parametrize("missing_rows", [True, False], ids=["rows-missing", "regular-grid"])
@pytest.mark.parametrize("step_min", [5, 15, 60])
def test_lags_are_the_value_one_step_one_day_one_week_earlier(step_min, missing_rows):
    step = step_min * MIN
    index = pd.date_range(T0, periods=int(pd.Timedelta(days=9) / step), freq=step)
    values = pd.Series(np.random.default_rng(1).normal(size=len(index)), index=index)
    values.iloc[40:45] = np.nan
    if missing_rows:  # a missing row must not shift the lags (a regular grid takes a faster path)
        values = values.drop(index[100:103])
    lags = lag_features({"x": values}, step)
    for name, by in (("x_lag_step", step), ("x_lag_1d", pd.Timedelta(days=1)), ("x_lag_7d", pd.Timedelta(days=7))):
        expected = values.reindex(values.index - by).to_numpy()
        np.testing.assert_array_equal(lags[name].to_numpy(), expected)


@pytest.mark.parametrize("window_days", [1, 3])
def test_rolling_statistics_cover_the_window_before_the_instant_only(window_days):
    step = 60 * MIN
    index = pd.date_range(T0, periods=24 * 6, freq=step)
    values = pd.Series(np.random.default_rng(2).uniform(size=len(index)), index=index)
    values.iloc[60:75] = np.nan  # missing steps are left out, not counted as zeros
    roll = rolling_features({"x": values}, step, window_days)
    for position in (30, 70, 80, 140):
        t = index[position]
        past = values[(values.index < t) & (values.index >= t - pd.Timedelta(days=window_days))].dropna()
        row = roll.loc[t]
        assert row[f"x_roll{window_days}d_mean"] == pytest.approx(past.mean(), rel=1e-12)
        assert row[f"x_roll{window_days}d_std"] == pytest.approx(past.std(), rel=1e-9)
        assert (row[f"x_roll{window_days}d_min"], row[f"x_roll{window_days}d_max"]) == (past.min(), past.max())
    spike = values.copy()
    spike.iloc[50] = 100.0
    spiked = rolling_features({"x": spike}, step, window_days)
    assert spiked[f"x_roll{window_days}d_max"].iloc[50] < 100.0 == spiked[f"x_roll{window_days}d_max"].iloc[51]


# physics ----------------------------------------------------------------------------------
def test_clearsky_features_use_the_sites_pv_system_and_are_safe_at_night():
    config = SimulatorConfig(seed=5, device_id="pv-site")
    raw = simulated(config, "2024-06-01", "2024-06-03")
    site = site_record(config)
    grid = rs.resample_site(raw, 15 * MIN, pd.Timedelta(hours=1)).grid
    proxies = physics_features(grid.index, grid[dd.SOLAR_KW], grid[dd.SOLAR_IRRADIANCE], grid[dd.PANEL_TEMP],
                               solar_config(site))
    np.testing.assert_array_equal(proxies[CLEARSKY_KW].to_numpy(), clearsky_ac_kw(config.solar, grid.index))
    assert np.isfinite(proxies[CLEARSKY_RATIO]).all() and (proxies[CLEARSKY_RATIO] >= 0).all()
    night = proxies[CLEARSKY_KW] == 0
    assert night.any() and (proxies.loc[night, CLEARSKY_RATIO] == 0).all()
    day = proxies[CLEARSKY_KW] > 0.5 * config.solar.inverter_limit_kw
    assert proxies.loc[day, CLEARSKY_RATIO].between(0.0, 2.0).all() and proxies.loc[day, CLEARSKY_RATIO].mean() > 0.2


# the whole feature set and leakage ----------------------------------------------------------
LEAK_INSTANTS = ("2024-06-05T00:00Z", "2024-06-08T13:15Z", "2024-06-10T23:45Z", "2024-06-11T06:30Z")


@pytest.fixture(scope="module")
def two_sites():
    """Two simulated sites with outages straddling the instants the leakage test checks, so
    a gap filled from the future (rather than the past) would show."""
    configs = site_configs(SimulatorConfig(seed=11, device_id="leak"), 2)
    raw = simulated(configs, "2024-06-01", "2024-06-12")
    outage = np.zeros(len(raw), dtype=bool)
    for t in map(pd.Timestamp, LEAK_INSTANTS):
        outage |= ((raw[dd.TS] > t - pd.Timedelta(minutes=40)) & (raw[dd.TS] <= t + pd.Timedelta(minutes=40))).to_numpy()
    return configs, raw[~outage].reset_index(drop=True)


def site_features(raw: pd.DataFrame, config: SimulatorConfig, window_days: int = 3) -> pd.DataFrame:
    mine = raw[raw[dd.DEVICE_ID] == config.device_id]
    grid = rs.resample_site(mine, 15 * MIN, pd.Timedelta(hours=1)).grid
    return build_features(grid, site_record(config), 15 * MIN, window_days)


def perturb_after(raw: pd.DataFrame, t: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Every value of every reading strictly after ``t`` changed, and some of those readings
    dropped; readings at or before ``t`` untouched."""
    rng = np.random.default_rng(seed)
    out = raw.copy()
    future = (out[dd.TS] > t).to_numpy()
    for column in dd.NUMERIC_COLUMNS:
        if column not in dd.INT_COLUMNS:
            out.loc[future, column] = out.loc[future, column] * rng.uniform(0.2, 3.0, future.sum()) + 0.37
    out.loc[future, dd.TOU_PERIOD] = rng.choice(dd.TOU_PERIODS, future.sum())
    drop = future & (rng.uniform(size=len(out)) < 0.2)
    return out[~drop]


def test_feature_columns_are_the_documented_set(two_sites):
    configs, raw = two_sites
    features = site_features(raw, configs[0])
    assert tuple(features.columns) == feature_names(3)
    assert features.dtypes.eq("float64").all()


@pytest.mark.parametrize("t", LEAK_INSTANTS)
def test_no_feature_at_or_before_t_changes_when_the_future_changes(two_sites, t):
    configs, raw = two_sites
    t = pd.Timestamp(t)
    changed = perturb_after(raw, t, seed=hash(t) % 2**32)
    for config in configs:
        original, perturbed = site_features(raw, config), site_features(changed, config)
        past = original.index <= t
        pd.testing.assert_frame_equal(original[past], perturbed.loc[original.index[past]], check_exact=True)
        later = original.index > t + pd.Timedelta(days=1)
        if later.any():  # the perturbation is real: features after t do move
            assert not original[later].equals(perturbed.reindex(original.index[later]))
