"""The direct multi-horizon design matrix: one row per (issue time, horizon step).

A row issued at ``tau`` for target instant ``tau + h`` sees only what is known at ``tau``:
the calendar, clear-sky output and tariff period of the *target* instant (known in advance),
the weather forecast for the target as issued at ``tau``, the target's own values at the same
time of day on the most recent days that are already in the past (``tau + h - k days`` for the
smallest ``k`` with that instant ``<= tau``), its last value and the day before ``tau``, and the
site's static attributes (one global model serves every site). Nothing after ``tau`` enters a
feature; ``tests/test_forecast_design.py`` perturbs the future to prove it.

The grid is regular (``feature_engineering.resample``), so time offsets are position offsets.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cloud.feature_engineering import calendar as cal
from cloud.feature_engineering.market import tou_name
from cloud.feature_engineering.physics import solar_config
from cloud.feature_engineering.resample import resample_site
from cloud.forecasting import clear_sky_index as csi
from cloud.forecasting.targets import TARGET_COLUMNS
from cloud.forecasting.weather import CLEAR_SKY_INDEX, TEMP, WeatherForecast
from cloud.site_steps import completed, site_steps
from der_core import der_data as dd
from der_physics.solar import clearsky_ac_kw

#: Bump when a feature is added, removed or computed differently; saved models record it.
DESIGN_VERSION = "fc4"
PROFILE_DAYS = 7
#: Days of PV clear-sky index at the same time of day behind the seasonal features: long
#: enough for a median that one cloudy spell does not move, short enough to follow the season.
SEASON_DAYS = 28
#: Days of readings a forecast needs before its issue time (lags, profiles, slack).
HISTORY_DAYS = SEASON_DAYS + 2

# Row identity and truth, kept beside the features.
ISSUED_AT, TARGET_TS, HORIZON_STEPS, Y, DAYTIME, CAPACITY = (
    "issued_at", "target_ts", "horizon_steps", "y", "daytime", "pv_capacity_kw",
)
META: tuple[str, ...] = (dd.DEVICE_ID, ISSUED_AT, TARGET_TS, HORIZON_STEPS, Y, DAYTIME)

LAG_DAY, LAG_WEEK, PROFILE, LAST, MEAN_LAST_DAY, MAX_LAST_DAY, CLEARNESS_LAST_DAY = (
    "same_time_last_day", "same_time_last_week", "profile_7d_mean", "last_value", "mean_last_day",
    "max_last_day", "pv_clearness_last_day",
)
CLEARSKY_KW, CLEARSKY_FORECAST_KW, TEMP_FORECAST, KT_FORECAST = (
    "clearsky_kw", "clearsky_forecast_kw", "temp_forecast_celsius", "clear_sky_index_forecast",
)
# The PV clear-sky index (cloud.forecasting.clear_sky_index) at the target's time of day on
# past days, and over the last hours before issue.
KT_LAG_DAY, KT_MEDIAN_WEEK, KT_MEDIAN_SEASON, KT_HIGH_SEASON, KT_LAST_HOUR, KT_LAST_3H = (
    "pv_index_same_time_last_day", "pv_index_median_7d", "pv_index_median_28d", "pv_index_p80_28d",
    "pv_clearness_last_hour", "pv_clearness_last_3h",
)
PV_INDEX: tuple[str, ...] = (KT_LAG_DAY, KT_MEDIAN_WEEK, KT_MEDIAN_SEASON, KT_HIGH_SEASON, KT_LAST_HOUR, KT_LAST_3H)
STATIC: tuple[str, ...] = (CAPACITY, "tilt_degrees", "azimuth_sin", "azimuth_cos", "battery_capacity_kwh",
                           "has_ev", "latitude", "longitude")
CALENDAR: tuple[str, ...] = (cal.HOUR_SIN, cal.HOUR_COS, cal.DOW_SIN, cal.DOW_COS, cal.DOY_SIN, cal.DOY_COS,
                             cal.IS_WEEKEND, cal.IS_HOLIDAY)
TOU: tuple[str, ...] = tuple(tou_name(p) for p in dd.TOU_PERIODS)
FEATURES: tuple[str, ...] = (
    "horizon_hours", *CALENDAR, CLEARSKY_KW, CLEARSKY_FORECAST_KW, TEMP_FORECAST, KT_FORECAST, *TOU,
    LAG_DAY, LAG_WEEK, PROFILE, LAST, MEAN_LAST_DAY, MAX_LAST_DAY, CLEARNESS_LAST_DAY, *PV_INDEX, *STATIC,
)


@dataclass(frozen=True)
class SiteHistory:
    """One site: its description (a ``sites`` row), its readings on the regular grid (gaps
    carried forward as far as the resampler's ``max_gap``: what was known at each step), and
    ``measured``, the same steps holding only what was measured in them (completed as
    :mod:`cloud.site_steps` says), which training targets are taken from. A step inside a
    coarse meter's interval (a 30-minute meter at 15-minute steps) or a short gap is known
    from the step before it, but its truth is not that: a model trained on carried values
    learns a lag."""

    site: Mapping[str, Any]
    grid: pd.DataFrame
    step: pd.Timedelta
    measured: pd.DataFrame | None = None  # None: the grid itself

    @property
    def device_id(self) -> str:
        return str(self.site[dd.DEVICE_ID])

    @property
    def steps_per_day(self) -> int:
        return int(pd.Timedelta(days=1) // self.step)


def site_history(readings: pd.DataFrame, site: Mapping[str, Any], step: pd.Timedelta,
                 max_gap: pd.Timedelta = pd.Timedelta(hours=1)) -> SiteHistory:
    grid = completed(resample_site(readings, step, max_gap).grid, site, step)
    return SiteHistory(site, grid, step, site_steps(readings, site, step).reindex(grid.index))


def issue_positions(history: SiteHistory, every: pd.Timedelta, horizon_steps: int) -> np.ndarray:
    """Grid positions to issue training rows from: aligned to ``every`` since the epoch, late
    enough for a week of lags, early enough that some target is still in the data."""
    index = history.grid.index
    per_day = history.steps_per_day
    aligned = ((index - pd.Timestamp(0, tz="UTC")) % every) == pd.Timedelta(0)
    positions = np.flatnonzero(np.asarray(aligned))
    return positions[(positions >= PROFILE_DAYS * per_day) & (positions < len(index) - 1)]


def design_matrix(history: SiteHistory, target: str, positions: np.ndarray, horizon_steps: int,
                  weather: WeatherForecast) -> pd.DataFrame:
    """Rows for every issue position and every horizon ``1..horizon_steps``; ``y`` is NaN where
    the target instant lies beyond the data (what a live forecast predicts)."""
    grid, per_day = history.grid, history.steps_per_day
    rows_i = np.repeat(positions, horizon_steps)
    h = np.tile(np.arange(1, horizon_steps + 1), len(positions))
    j = rows_i + h
    index = grid.index.append(pd.date_range(grid.index[-1] + history.step, periods=horizon_steps, freq=history.step))
    y = _padded(grid, TARGET_COLUMNS[target], horizon_steps)
    measured = history.measured if history.measured is not None and TARGET_COLUMNS[target] in history.measured else grid
    truth = _padded(measured, TARGET_COLUMNS[target], horizon_steps)
    inverter_kw = solar_config(history.site).inverter_limit_kw
    clear = clearsky_ac_kw(solar_config(history.site), index)
    up = csi.sun_up(clear, inverter_kw)
    out: dict[str, Any] = {dd.DEVICE_ID: np.full(len(j), history.device_id, dtype=object),
                           ISSUED_AT: index[rows_i], TARGET_TS: index[j], HORIZON_STEPS: h, Y: truth[j]}
    out[DAYTIME] = up[j]
    out["horizon_hours"] = h * history.step / pd.Timedelta(hours=1)
    calendar = cal.calendar_features(index, history.site.get("timezone") or "UTC", history.site.get("country"))
    out.update({name: calendar[name].to_numpy()[j] for name in CALENDAR})
    seen = weather.forecast(history.site, index[rows_i], index[j])
    out.update({CLEARSKY_KW: clear[j], TEMP_FORECAST: seen[TEMP].to_numpy(), KT_FORECAST: seen[CLEAR_SKY_INDEX].to_numpy()})
    out[CLEARSKY_FORECAST_KW] = clear[j] * seen[CLEAR_SKY_INDEX].to_numpy()
    out.update(_tou(grid, j - PROFILE_DAYS * per_day * np.ceil(h / (PROFILE_DAYS * per_day)).astype(int)))
    out.update(_own_past(y, rows_i, h, per_day))
    pv = _padded(grid, dd.SOLAR_KW, horizon_steps)
    out[CLEARNESS_LAST_DAY] = csi.trailing_index(pv, clear, up, rows_i, per_day)
    out.update(_pv_index(pv, clear, up, rows_i, h, per_day))
    out.update(_static(history.site, len(j)))
    frame = pd.DataFrame(out)
    return frame[[*META, *FEATURES]]


def _padded(grid: pd.DataFrame, column: str, extra: int) -> np.ndarray:
    values = grid[column].to_numpy(dtype="float64") if column in grid.columns else np.full(len(grid), np.nan)
    return np.concatenate([values, np.full(extra, np.nan)])


def _at(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.where(positions >= 0, values[np.clip(positions, 0, None)], np.nan)


def _own_past(y: np.ndarray, i: np.ndarray, h: np.ndarray, per_day: int) -> dict[str, np.ndarray]:
    """Same time of day on the newest past days, the week before, and the day before issue."""
    first_day = np.ceil(h / per_day).astype(int)  # the smallest k with tau + h - k days <= tau
    days = np.stack([_at(y, i + h - (first_day + k) * per_day) for k in range(PROFILE_DAYS)])
    week = PROFILE_DAYS * np.ceil(h / (PROFILE_DAYS * per_day)).astype(int)
    filled = np.nan_to_num(y)
    sums = np.concatenate([[0.0], np.cumsum(filled)])
    counts = np.concatenate([[0], np.cumsum(np.isfinite(y))])
    start = np.clip(i + 1 - per_day, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_day = (sums[i + 1] - sums[start]) / (counts[i + 1] - counts[start])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN, as meant
            profile = np.nanmean(days, axis=0)
    return {LAG_DAY: days[0], LAG_WEEK: _at(y, i + h - week * per_day), PROFILE: profile, LAST: y[i],
            MEAN_LAST_DAY: mean_day, MAX_LAST_DAY: _rolling_max(y, per_day)[i]}


def _rolling_max(y: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(y).rolling(window, min_periods=1).max().to_numpy()


def _pv_index(pv: np.ndarray, clear: np.ndarray, up: np.ndarray, i: np.ndarray, h: np.ndarray,
              per_day: int) -> dict[str, np.ndarray]:
    """The clear-sky index at the target's time of day on the newest past day, its median over
    the last week and its median and 80th percentile over the last :data:`SEASON_DAYS` (what
    this time of day usually looks like now, and on its clear days, shading included), and
    the clearness of the last hour and three hours before issue."""
    index = csi.index_of(pv, clear, up)
    same_time = i + h - np.ceil(h / per_day).astype(int) * per_day  # the newest past day, as for LAG_DAY
    week = csi.same_time_quantiles(index, per_day, PROFILE_DAYS, (0.5,))[0]
    season = csi.same_time_quantiles(index, per_day, SEASON_DAYS, (0.5, 0.8))
    steps_per_hour = max(1, per_day // 24)
    return {KT_LAG_DAY: _at(index, same_time), KT_MEDIAN_WEEK: _at(week, same_time),
            KT_MEDIAN_SEASON: _at(season[0], same_time), KT_HIGH_SEASON: _at(season[1], same_time),
            KT_LAST_HOUR: csi.trailing_index(pv, clear, up, i, steps_per_hour),
            KT_LAST_3H: csi.trailing_index(pv, clear, up, i, 3 * steps_per_hour)}


def _tou(grid: pd.DataFrame, positions: np.ndarray) -> dict[str, np.ndarray]:
    """The tariff period of the target instant, read a whole number of weeks earlier: tariffs
    repeat weekly, and the reading is already in the past at issue time."""
    if dd.TOU_PERIOD not in grid.columns:
        return {name: np.full(len(positions), np.nan) for name in TOU}
    periods = grid[dd.TOU_PERIOD].astype("object").to_numpy()
    seen = np.where(positions >= 0, periods[np.clip(positions, 0, None)], None)
    known = np.isin(seen, dd.TOU_PERIODS)
    return {tou_name(p): np.where(known, (seen == p).astype("float64"), np.nan) for p in dd.TOU_PERIODS}


def _static(site: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    def number(key: str) -> float:
        value = site.get(key)
        try:
            return float(value) if value is not None else np.nan
        except (TypeError, ValueError):
            return np.nan

    azimuth = np.radians(number("azimuth_degrees"))
    values = {CAPACITY: number("pv_capacity_kw"), "tilt_degrees": number("tilt_degrees"),
              "azimuth_sin": np.sin(azimuth), "azimuth_cos": np.cos(azimuth),
              "battery_capacity_kwh": number("battery_capacity_kwh"), "has_ev": number("has_ev"),
              "latitude": number("latitude"), "longitude": number("longitude")}
    return {k: np.full(n, v) for k, v in values.items()}
