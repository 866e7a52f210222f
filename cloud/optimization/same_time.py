"""The same local clock time on other days: the lookup that the seasonal-naive load forecast,
the demand-response baselines, the reserve model's house residuals and the replayed car
sessions of the naive scenarios share.

A household lives by its local clock, so "the same time yesterday" is the same local clock
time, which across a daylight-saving change is 23 or 25 hours back, not 24. A clock time the
earlier day skipped (the spring gap) is taken an hour later, where the clock would have been
had it not jumped; one the earlier day had twice (the autumn repeat) is taken the first time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_DAY_NS = pd.Timedelta(days=1).value
_GAP = pd.Timedelta(hours=1)


def earlier(times: pd.DatetimeIndex | pd.Timestamp, timezone: str, days: int) -> pd.DatetimeIndex | pd.Timestamp:
    """``times`` at the same local clock time ``days`` days earlier, in UTC."""
    one = isinstance(times, pd.Timestamp)
    out = _earlier(pd.DatetimeIndex([times] if one else times), timezone, days).tz_convert("UTC")
    return out[0] if one else out


def values_at(values: pd.Series | pd.DataFrame, instants: pd.DatetimeIndex, days_back: np.ndarray | int,
              timezone: str) -> np.ndarray:
    """``values`` at each instant's local clock time ``days_back`` days earlier, NaN where it
    has no row: ``days_back`` is broadcast against the instants, one row per lag, and a frame
    gives a trailing axis of its columns. All lags take one index lookup, as this runs on every
    re-plan of every backtest. Naive instants are read as UTC."""
    days_back = np.atleast_2d(days_back)
    days_back = np.broadcast_to(days_back, (days_back.shape[0], len(instants)))
    targets = _earlier(instants, timezone, days_back)
    index = values.index
    if isinstance(index, pd.DatetimeIndex):
        targets = targets.tz_convert(index.tz or "UTC").as_unit(index.unit)
        targets = targets if index.tz is not None else targets.tz_localize(None)
    positions = index.get_indexer(targets)
    table = values.to_numpy(dtype=float)
    # A missing row's position is -1, which reads the NaN row appended last.
    found = np.concatenate([table, np.full((1, *table.shape[1:]), np.nan)])[positions]
    return found.reshape(days_back.shape + table.shape[1:])


def wall(times: pd.DatetimeIndex | pd.Timestamp, timezone: str) -> pd.DatetimeIndex | pd.Timestamp:
    """The local clock's reading at each of ``times`` (naive ones read as UTC)."""
    return (times.tz_localize("UTC") if times.tz is None else times).tz_convert(timezone).tz_localize(None)


def _earlier(times: pd.DatetimeIndex, timezone: str, days: np.ndarray | int) -> pd.DatetimeIndex:
    """``times`` at their local clock time ``days`` days earlier (``days`` broadcast against
    ``times``, flattened), in ``timezone``."""
    walls = wall(times, timezone).as_unit("ns").asi8 - np.asarray(days, dtype=np.int64) * _DAY_NS
    flat = pd.DatetimeIndex(walls.ravel().view("M8[ns]"))
    return flat.tz_localize(timezone, ambiguous=np.ones(len(flat), dtype=bool), nonexistent=_GAP)
