"""Prices kept with the time they became known, and read back as they were known at an instant.

:func:`fetch_prices` asks a source only for the part of a window its store does not hold yet
and stores what comes back; :func:`published_prices` answers what a plan made at ``at`` could
have known, so a backtest never prices with a publication from its future;
:func:`price_forecast` fills the instants no publication covers yet, from those same prices.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cloud.live.prices.base import PriceSource
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd

log = logging.getLogger(__name__)
#: How far before a window's start a stored interval may begin and still reach into it.
LONGEST_INTERVAL = pd.Timedelta(days=1)
#: Days of published prices a price forecast averages per local hour.
FORECAST_DAYS = 7
#: How far past an instant a day-ahead publication may reach (a day and its eve).
PUBLISHED_AHEAD = pd.Timedelta(days=3)
#: How far before now the newest stored price must reach for a plan to start on a known one:
#: a published day covers now; a real-time feed (ComEd) publishes each interval at its end.
PRESENT = pd.Timedelta(hours=1)


def missing_windows(store: CloudStore, source: PriceSource, start: pd.Timestamp,
                    end: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The parts of ``[start, end)`` before the first and after the last interval stored for
    the source's name and area (all of it when none is). A hole between stored intervals is
    not asked again: prices are published in whole days or as they run, so one is a gap the
    service had too."""
    stored = store.read_frame(s.PRICES, {s.SOURCE: source.name, s.AREA: source.area},
                              start=start - LONGEST_INTERVAL, stop=end)
    stored = stored[stored[s.END_TS] > start]
    if stored.empty:
        return [(start, end)]
    first, last = stored[dd.TS].min(), stored[s.END_TS].max()
    return [(a, b) for a, b in ((start, first), (last, end)) if a < b]


def fetch_prices(store: CloudStore, source: PriceSource, start: pd.Timestamp, end: pd.Timestamp) -> int:
    """Fetch the source's prices for ``[start, end)`` that the store lacks, store them with
    ``fetched_at`` now, and return the rows stored. A SourceError from the service passes up
    (the job plans on what is stored and marks the plan stale)."""
    start, end = dd.parse_ts(start), dd.parse_ts(end)
    stored = 0
    for a, b in missing_windows(store, source, start, end):
        frame = source.fetch(a, b)
        if frame.empty:
            continue
        stored += store.upsert_frame(s.PRICES, frame.assign(**{s.FETCHED_AT: dd.utc_now()}))
    log.info("prices: %d row(s) of %s %s stored for %s to %s", stored, source.name, source.area,
             dd.format_ts(start), dd.format_ts(end))
    return stored


def knows_present(store: CloudStore, source: PriceSource, now: pd.Timestamp) -> bool:
    """Whether a price of the source stored for the hour before ``now`` (:data:`PRESENT`) is
    in the store: without one, a plan made now starts on forecast or made-up prices."""
    start = dd.parse_ts(now) - PRESENT
    return missing_windows(store, source, start, dd.parse_ts(now)) != [(start, dd.parse_ts(now))]


def published_prices(store: CloudStore, source_name: str, area: str, at: pd.Timestamp,
                     instants: pd.DatetimeIndex, step: pd.Timedelta) -> pd.Series:
    """Per instant ``t`` (describing ``(t - step, t]``, the readings' convention), the mean
    price over that interval from the latest publication made at or before ``at`` for each
    price interval; NaN where any part of it has no such price. Indexed by ``instants``."""
    instants = pd.DatetimeIndex(instants).tz_convert("UTC")
    out = pd.Series(np.nan, index=instants, name=s.PRICE_PER_KWH)
    if instants.empty:
        return out
    rows = store.read_frame(s.PRICES, {s.SOURCE: source_name, s.AREA: area},
                            start=instants.min() - step - LONGEST_INTERVAL, stop=instants.max())
    rows = rows[rows[s.PUBLISHED_AT] <= dd.parse_ts(at)]
    if rows.empty:
        return out
    latest = rows.sort_values([dd.TS, s.PUBLISHED_AT]).drop_duplicates(dd.TS, keep="last")
    starts = latest[dd.TS].to_numpy(dtype="datetime64[us]").astype("int64")
    ends = latest[s.END_TS].to_numpy(dtype="datetime64[us]").astype("int64")
    ends = np.minimum(ends, np.append(starts[1:], ends[-1]))  # a later interval wins where two overlap
    prices = latest[s.PRICE_PER_KWH].to_numpy()
    stops = instants.as_unit("us").asi8
    begins = stops - pd.Timedelta(step).value // 1000
    price_area, covered = _integral(starts, ends, prices, stops) - _integral(starts, ends, prices, begins)
    length = (stops - begins).astype("float64")
    full = np.isclose(covered, length)
    out[full] = price_area[full] / length[full]
    return out


def _integral(starts: np.ndarray, ends: np.ndarray, prices: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(∫ price, ∫ covered)`` from the first interval up to each ``x``, over sorted,
    non-overlapping intervals ``[starts, ends)``."""
    durations = (ends - starts).astype("float64")
    area_before = np.concatenate([[0.0], np.cumsum(prices * durations)])
    cover_before = np.concatenate([[0.0], np.cumsum(durations)])
    i = np.searchsorted(starts, x, side="right")  # intervals starting at or before x
    inside = np.zeros(len(x))
    last = i - 1
    has = last >= 0
    inside[has] = np.clip(x[has] - starts[last[has]], 0, durations[last[has]])
    price_here = np.where(has, prices[np.maximum(last, 0)], 0.0)
    return np.stack([area_before[np.maximum(last, 0)] * has + price_here * inside,
                     cover_before[np.maximum(last, 0)] * has + inside])


def price_forecast(store: CloudStore, source_name: str, area: str, at: pd.Timestamp, instants: pd.DatetimeIndex,
                   step: pd.Timedelta, timezone: str, days: int = FORECAST_DAYS) -> pd.Series:
    """:func:`published_prices` where a publication known at ``at`` covers an instant; past
    them, the mean price of the same local hour over the last ``days`` days of prices known
    at ``at`` (those ending with the latest interval known), the simplest forecast that sees
    only what was published by then and keeps the day's shape; NaN where neither has a price.
    Hours are those of each instant's interval start, ``t - step``, on the site's clock."""
    out = published_prices(store, source_name, area, at, instants, step)
    if not out.isna().any():
        return out
    at = dd.parse_ts(at)
    rows = store.read_frame(s.PRICES, {s.SOURCE: source_name, s.AREA: area},
                            start=at - pd.Timedelta(days=days) - LONGEST_INTERVAL, stop=at + PUBLISHED_AHEAD)
    rows = rows[rows[s.PUBLISHED_AT] <= at]
    if rows.empty:
        return out
    last = pd.Timestamp(rows[s.END_TS].max()).floor(step)
    past = pd.date_range(last - pd.Timedelta(days=days), last, freq=step, inclusive="right")
    history = published_prices(store, source_name, area, at, past, step)
    by_hour = history.groupby(_local_hour(history.index, step, timezone)).mean()
    missing = out.isna().to_numpy()
    hours = _local_hour(out.index[missing], step, timezone)
    out.iloc[np.flatnonzero(missing)] = by_hour.reindex(hours).to_numpy()
    return out


def _local_hour(instants: pd.DatetimeIndex, step: pd.Timedelta, timezone: str) -> np.ndarray:
    return np.asarray((pd.DatetimeIndex(instants) - step).tz_convert(timezone).hour)
