"""Baselines: what a site would have drawn from the grid in an event's window without the event.

Two kinds, each written once here:

* ``forecast`` (:func:`same_step_mean`): per plan step, the mean of the site's value in the
  same step on each of the ``days`` most recent earlier days of the same day type (weekday or
  weekend in the site's time zone, within :data:`LOOKBACK_DAYS`): a seasonal-naive forecast of
  what the site usually does at that hour, its battery's own rule included. Households keep
  weekday and weekend habits (evening car charging above all), so mixing the two biases it. The decision computes it and
  stores its window mean (:func:`window_mean`) with the event, so delivery is measured against the baseline the
  plan was made on, never one recomputed after the fact.
* ``high_5_of_10`` (:func:`high_x_of_y`): the utility-style baseline of CAISO's and PJM's
  programmes. Among the last 10 eligible days before the event day (same day type in the
  site's time zone, weekday or weekend; no earlier event of the fleet overlapping the window;
  readings in at least :data:`MIN_COVERAGE` of the steps the window expects one in,
  :func:`cloud.dr.delivery.window_means`), the mean of the 5 days with
  the highest window-average net import. No same-day adjustment. With fewer than 5 eligible
  days there is no such baseline (None), as a programme would not settle on it either.

A reading stamped ``ts`` covers the interval ending at ``ts`` (the gateway's rule), so a
window ``[start, end)`` holds the readings with ``start < ts <= end`` (:func:`in_window`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cloud.optimization.same_time import earlier, values_at
from der_core import der_data as dd

FORECAST = "forecast"
HIGH_5_OF_10 = "high_5_of_10"
BASELINES = (FORECAST, HIGH_5_OF_10)
X_DAYS, Y_DAYS = 5, 10
LOOKBACK_DAYS = 21  # calendar days searched for eligible days (10 weekdays with a few excluded)
MIN_COVERAGE = 0.8
_TICK = pd.Timedelta(microseconds=1)


def in_window(ts: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Which readings describe ``[start, end)``: those stamped in ``(start, end]``."""
    return (ts > start) & (ts <= end)


def read_bounds(start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The store's ``[start, stop)`` read bounds for the readings of window ``[start, end)``."""
    return start + _TICK, end + _TICK


def window_mean(values: np.ndarray, steps: pd.DatetimeIndex, step: pd.Timedelta, start: pd.Timestamp,
                end: pd.Timestamp) -> np.ndarray:
    """The mean over the window ``[start, end)`` of ``values`` given per plan step (``steps``,
    the last axis), each step weighted by the share of it inside the window.

    A window off the step (01:07-03:07) is planned on the steps covering it (01:00-03:15), but
    delivery is its baseline minus the readings stamped in the window alone: counted whole, the
    minutes 01:00-01:07 and 03:07-03:15 would weigh in the baseline as much as any inside it."""
    shares = step_shares(steps, step, start, end)
    return np.asarray(values, dtype=float) @ shares / shares.sum()


def step_shares(steps: pd.DatetimeIndex, step: pd.Timedelta, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """Per plan step (``steps``, their starts), the share of it inside the window ``[start, end)``."""
    ends = steps + step
    inside = ends.where(ends < end, end) - steps.where(steps > start, start)
    return np.clip((inside / step).to_numpy(dtype=float), 0.0, 1.0)


def step_table(readings: pd.DataFrame, column: str, step: pd.Timedelta) -> pd.DataFrame:
    """Mean of ``column`` per step (index: step start, UTC) and device (columns); a reading
    counts in the step its interval ends in."""
    if readings.empty:
        return pd.DataFrame(dtype=float)
    starts = (pd.DatetimeIndex(readings[dd.TS]) - _TICK).floor(step)
    frame = pd.DataFrame({"step": starts, dd.DEVICE_ID: readings[dd.DEVICE_ID].to_numpy(),
                          "value": readings[column].to_numpy(dtype=float)})
    return frame.pivot_table(index="step", columns=dd.DEVICE_ID, values="value", aggfunc="mean")


def same_type_lags(start: pd.Timestamp, timezone: str, days: int, lookback: int = LOOKBACK_DAYS) -> list[int]:
    """The ``days`` most recent whole-day lags (1 = the day before) whose day has ``start``'s day type."""
    kind = day_type(start, timezone)
    return [d for d in range(1, lookback + 1) if day_type(earlier(start, timezone, d), timezone) == kind][:days]


def same_step_mean(table: pd.DataFrame, steps: pd.DatetimeIndex, devices: list[str], lags: list[int],
                   timezone: str = "UTC") -> np.ndarray:
    """(devices, steps): the mean of each device's value at the same local clock time ``lags``
    days earlier (:func:`same_time.values_at`, the household's hours; NaN where none of them
    has one)."""
    lagged = values_at(table.reindex(columns=devices), steps, np.asarray(lags)[:, None], timezone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN mean is no history: NaN is the answer
        return np.nanmean(lagged, axis=0).T


def high_x_of_y(day_means: pd.Series, x: int = X_DAYS, y: int = Y_DAYS) -> float | None:
    """The mean of the ``x`` highest of the ``y`` most recent eligible days' window means
    (``day_means`` indexed by day, eligible days only); None with fewer than ``x`` days."""
    recent = day_means.dropna().sort_index().iloc[-y:]
    if len(recent) < x:
        return None
    return float(recent.nlargest(x).mean())


def day_type(ts: pd.Timestamp, timezone: str) -> str:
    return "weekend" if ts.tz_convert(timezone).day_of_week >= 5 else "weekday"
