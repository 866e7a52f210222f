"""What every price adapter shares: the Protocol, the rows it returns, when a price became known.

A :class:`PriceSource` answers ``fetch(start, end)`` with rows of the ``prices`` table
(:mod:`cloud.store.schema`): ``ts``/``end_ts`` the interval in UTC, the price in currency per
kWh and ``published_at``, the time the service made that price known. ``published_at`` is what
keeps a backtest honest, so it is the service's documented publication time
(:class:`DayAheadPublication`), or for a real-time feed the end of the interval, never the
time the row happened to be fetched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time as clock
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from cloud.live.http import HttpClient, MalformedResponse, RetryPolicy, Service
from cloud.store import schema as s
from der_core import der_data as dd

#: ``kind`` of a price: fixed the day before delivery, or set as the interval runs.
DAY_AHEAD, REAL_TIME = "day_ahead", "real_time"
#: Factor from a price per ``unit`` to a price per kWh.
PER_KWH = {"per_kwh": 1.0, "per_mwh": 1e-3}
#: Factor from hundredths of a currency (cents, pence) to the currency.
CENTS = 1e-2


@runtime_checkable
class PriceSource(Protocol):
    """One price series: ``name`` (the ``source`` column), ``area`` (market zone, region or
    tariff), ``currency`` (ISO 4217)."""

    name: str
    area: str
    currency: str

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Prices of the intervals overlapping ``[start, end)`` that the service has now, as
        ``prices`` rows without ``fetched_at``; raises a ``cloud.live.http.SourceError``."""
        ...


@dataclass(frozen=True)
class HttpSettings:
    """How adapters reach their service: the environment (``DER_<SERVICE>_URL``, keys), the
    retry policy and the sleep between attempts (a parameter, so tests see the waits)."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    policy: RetryPolicy = RetryPolicy()
    sleep: Callable[[float], None] = time.sleep

    def client(self, service: Service) -> HttpClient:
        return HttpClient(service, self.policy, environ=self.environ, sleep=self.sleep)


@dataclass(frozen=True)
class DayAheadPublication:
    """A service that publishes each delivery day's prices once, on the day before, at the
    local clock time ``at`` in ``zone``. ``window_offset`` is how long after the publication
    day's midnight the published window starts: a day for a market whose delivery day runs
    midnight to midnight, 23 hours for one that runs 23:00 to 23:00. Delivery days are
    counted on the local wall clock, so a 23- or 25-hour day is one publication like any other."""

    zone: str
    at: clock
    window_offset: timedelta = timedelta(days=1)

    def published_at(self, starts: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """The publication time of the prices of intervals starting at ``starts`` (UTC)."""
        wall = pd.DatetimeIndex(starts).tz_convert(self.zone).tz_localize(None)
        day = (wall - self.window_offset).normalize()
        local = day + pd.Timedelta(hours=self.at.hour, minutes=self.at.minute)
        return local.tz_localize(self.zone).tz_convert("UTC")


#: The single day-ahead coupling (SDAC) closes at 12:00 CET; Regulation (EU) 543/2013 art.
#: 12.1.d has the prices on the transparency platform no later than one hour after gate
#: closure, so 13:00 is when they are certainly known (EPEX SPOT's results come from ~12:45).
SDAC = DayAheadPublication("Europe/Brussels", clock(13, 0))


def price_frame(source: PriceSource, kind: str, starts: pd.DatetimeIndex, ends: pd.DatetimeIndex,
                prices_per_kwh: np.ndarray, published: pd.DatetimeIndex, window: tuple[pd.Timestamp, pd.Timestamp],
                currency: str | None = None) -> pd.DataFrame:
    """``prices`` rows of the intervals overlapping ``window``, sorted by ``ts``; where the
    service repeats an interval, its last row counts. An interval that does not end after it
    starts is a malformed answer."""
    starts, ends = pd.DatetimeIndex(starts).tz_convert("UTC"), pd.DatetimeIndex(ends).tz_convert("UTC")
    if (ends <= starts).any():
        first = int(np.flatnonzero(ends <= starts)[0])
        raise MalformedResponse(f"{source.name}: the interval starting {dd.format_ts(starts[first])} ends at "
                                f"{dd.format_ts(ends[first])}; expected an end after the start")
    frame = pd.DataFrame({
        s.SOURCE: source.name, s.AREA: source.area, dd.TS: starts, s.END_TS: ends,
        s.PUBLISHED_AT: pd.DatetimeIndex(published).tz_convert("UTC"), s.KIND: kind,
        s.PRICE_PER_KWH: np.asarray(prices_per_kwh, dtype="float64"), s.CURRENCY: currency or source.currency,
    })
    start, end = window
    frame = frame[(frame[s.END_TS] > start) & (frame[dd.TS] < end)]
    return frame.drop_duplicates(dd.TS, keep="last").sort_values(dd.TS, ignore_index=True)


def utc_times(values: Sequence[Any], service: str, name: str, *, unit: str | None = None,
              fmt: str = "ISO8601", zone: str = "UTC") -> pd.DatetimeIndex:
    """Times as the service writes them (``unit`` ``ms``/``s`` for epoch numbers, else text in
    ``fmt``; text without an offset is wall time in ``zone``) as UTC, or MalformedResponse
    naming the field. A null time is malformed too: dropped unsaid, its price would vanish."""
    try:
        if unit is not None:
            times = pd.DatetimeIndex(pd.to_datetime(pd.to_numeric(pd.Series(values)), unit=unit, utc=True))
        else:
            times = _text_times(pd.Series(values, dtype=object), fmt, zone)
    except (TypeError, ValueError, OverflowError) as error:
        raise MalformedResponse(f"{service}: field {name!r} holds a time that cannot be read "
                                f"({type(error).__name__}); expected what the service documents") from None
    if times.isna().any():
        raise MalformedResponse(f"{service}: field {name!r} is null in row {int(np.flatnonzero(times.isna())[0])}; "
                                "expected a time")
    return times


def _text_times(text: pd.Series, fmt: str, zone: str) -> pd.DatetimeIndex:
    """UTC instants of times written as text. Offsets may differ from row to row (a feed in
    local time crosses a change of daylight saving time), so then each row is read alone.
    Wall times are placed in ``zone`` in the order they come: a repeated hour (the 25-hour
    day) is read as its first, then its second occurrence, newest-first feeds read backwards."""
    try:
        times = pd.DatetimeIndex(pd.to_datetime(text, format=fmt))
    except ValueError:
        each = [pd.to_datetime(value, format=fmt) for value in text]
        if any(t is not pd.NaT and t.tzinfo is None for t in each):
            raise
        return pd.DatetimeIndex([t if t is pd.NaT else t.tz_convert("UTC") for t in each], tz="UTC")
    if times.tz is not None:
        return times.tz_convert("UTC")
    backwards = len(times) > 1 and times.is_monotonic_decreasing and not times.is_monotonic_increasing
    if backwards:
        times = times[::-1]
    times = times.tz_localize(zone, ambiguous="infer", nonexistent="raise").tz_convert("UTC")
    return times[::-1] if backwards else times


def numbers(values: Sequence[Any], service: str, name: str) -> np.ndarray:
    """Prices as the service writes them (numbers or numeric text) as floats, or
    MalformedResponse naming the field."""
    try:
        out = pd.to_numeric(pd.Series(values, dtype=object), errors="raise").to_numpy(dtype="float64")
    except (TypeError, ValueError):
        out = np.array([np.nan])
    if not np.isfinite(out).all():
        raise MalformedResponse(f"{service}: field {name!r} holds a value that is not a number; expected a price")
    return out
