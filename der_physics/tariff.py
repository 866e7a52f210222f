"""A tariff's prices at given instants: the one place a tariff (``der_core.tariff``) becomes
per-step import and export prices, and its demand window a per-step mask.

Periods and windows are read on the site's local clock at each instant, so a day of 23 or 25
hours (daylight saving) has its periods where the wall clock puts them. Public holidays are
the country's (the ``holidays`` calendars).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import holidays
import numpy as np
import pandas as pd

from der_core.der_data import TOU_PERIODS
from der_core.tariff import (
    DAY_KINDS,
    DEFAULT_SCHEDULE,
    OTHERWISE_PERIOD,
    DynamicExport,
    DynamicImport,
    FixedPrice,
    Tariff,
    TouPrice,
    When,
    site_tariff,
)
from der_physics import base

if TYPE_CHECKING:
    from der_core.config import SimulatorConfig

WEEKDAY, WEEKEND, HOLIDAY = range(3)  # indexes into der_core.tariff.DAY_KINDS


@lru_cache(maxsize=64)
def holiday_days(country: str, first_year: int, last_year: int) -> np.ndarray:
    """Public holidays as days since the epoch (local dates)."""
    try:
        calendar = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    except NotImplementedError:
        return np.empty(0, dtype=np.int64)
    return np.array(sorted(np.datetime64(d, "D").astype(np.int64) for d in calendar), dtype=np.int64)


def is_holiday(local_day: np.ndarray, country: str) -> np.ndarray:
    first_year = int(np.datetime64(int(local_day.min()), "D").astype("datetime64[Y]").astype(int) + 1970)
    last_year = int(np.datetime64(int(local_day.max()), "D").astype("datetime64[Y]").astype(int) + 1970)
    return np.isin(local_day, holiday_days(country, first_year, last_year))


def day_kind(weekday: np.ndarray, holiday: np.ndarray) -> np.ndarray:
    """Each local date's kind: a public holiday first, else Saturday and Sunday the weekend."""
    return np.where(holiday, HOLIDAY, np.where(weekday >= 5, WEEKEND, WEEKDAY)).astype(np.int8)


def within(when: When, hour: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Whether each instant (local hour, day kind) falls in ``when``."""
    days = np.isin(kind, [DAY_KINDS.index(d) for d in when.days])
    hours = np.zeros(len(hour), dtype=bool)
    for start, end in when.hours:
        hours |= ((hour >= start) & (hour < end)) if start < end else ((hour >= start) | (hour < end))
    return days & hours


def period_of(periods: Sequence[When], hour: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """The first of ``periods`` each instant falls in, ``len(periods)`` where none holds."""
    found = np.full(len(hour), len(periods), dtype=np.int64)
    for i in reversed(range(len(periods))):
        found[within(periods[i], hour, kind)] = i
    return found


_DEFAULT_PERIODS = [When(days=list(days), hours=[list(h) for h in hours]) for _, days, hours in DEFAULT_SCHEDULE]
_DEFAULT_CODES = np.array([TOU_PERIODS.index(name) for name, _, _ in DEFAULT_SCHEDULE] + [TOU_PERIODS.index(OTHERWISE_PERIOD)],
                          dtype=np.int8)


def tou_period(hour: np.ndarray, weekday: np.ndarray, holiday: np.ndarray) -> np.ndarray:
    """The simulated sites' time-of-use period (index into ``der_data.TOU_PERIODS``) of each
    instant, from ``der_core.tariff.DEFAULT_SCHEDULE``."""
    return _default_period(np.asarray(hour, dtype=float), day_kind(np.asarray(weekday), np.asarray(holiday)))


def _default_period(hour: np.ndarray, kind: np.ndarray) -> np.ndarray:
    return _DEFAULT_CODES[period_of(_DEFAULT_PERIODS, hour, kind)]


def arbitrage_periods(tariff: Tariff, instants: pd.DatetimeIndex, timezone: str, country: str) -> np.ndarray:
    """The period (index into ``der_data.TOU_PERIODS``) the battery's own time-of-use rule
    follows at each instant. Under a time-of-use import price it is the tariff's own: its
    cheapest periods off-peak, its dearest peak, the others shoulder, on the tariff's clock
    (a British home's 02:00-05:00 night is off-peak, not the simulated sites' hours), and all
    shoulder where every period costs the same. Under a fixed or dynamic import price, which
    has no periods, the simulated sites' schedule (:func:`tou_period`)."""
    hour, kind = local_calendar(instants, timezone, country)
    rule = tariff.import_price
    if not isinstance(rule, TouPrice):
        return _default_period(hour, kind)
    levels = [p.price for p in rule.periods] + [rule.otherwise]
    price = _price(rule, hour, kind, np.full(len(hour), np.nan))
    off_peak, shoulder, peak = (TOU_PERIODS.index(name) for name in ("off_peak", "shoulder", "peak"))
    if min(levels) == max(levels):
        return np.full(len(hour), shoulder, dtype=np.int8)
    return np.where(price == min(levels), off_peak, np.where(price == max(levels), peak, shoulder)).astype(np.int8)


def local_calendar(instants: pd.DatetimeIndex, timezone: str, country: str) -> tuple[np.ndarray, np.ndarray]:
    """Local hour (fractional) and day kind of the interval each instant ends, whose tariff
    period is the one in force over it (:func:`base.interval_clock`)."""
    hour, weekday, local_day = base.interval_clock(base.TimeAxis.from_times(instants), timezone)
    if len(local_day) == 0:
        return hour, np.zeros(0, dtype=np.int8)
    return hour, day_kind(weekday, is_holiday(local_day, country))


def _price(rule: FixedPrice | TouPrice | DynamicImport | DynamicExport, hour: np.ndarray, kind: np.ndarray,
           wholesale: np.ndarray) -> np.ndarray:
    if isinstance(rule, FixedPrice):
        return np.full(len(hour), rule.price)
    if isinstance(rule, TouPrice):
        prices = np.array([p.price for p in rule.periods] + [rule.otherwise])
        return prices[period_of(rule.periods, hour, kind)]
    if isinstance(rule, DynamicImport):
        return (rule.factor * wholesale + sum(rule.adders.values())) * (1.0 + rule.vat)
    price = rule.factor * wholesale + rule.adder
    return price if rule.minimum is None else np.maximum(price, rule.minimum)  # NaN stays unknown


def tariff_prices(
    tariff: Tariff, instants: pd.DatetimeIndex, timezone: str, country: str,
    wholesale_per_kwh: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Import and export price per kWh at each instant. ``wholesale_per_kwh``: the wholesale
    price at each instant, NaN where unknown, for a dynamic import or export; their prices
    are NaN where it is, and everywhere when it is not given."""
    hour, kind = local_calendar(pd.DatetimeIndex(instants), timezone, country)
    if wholesale_per_kwh is None:
        wholesale = np.full(len(hour), np.nan)
    else:
        wholesale = np.asarray(wholesale_per_kwh, dtype=float).reshape(-1)
        if len(wholesale) != len(hour):
            raise ValueError(f"wholesale prices have {len(wholesale)} values for {len(hour)} instants")
    return (_price(tariff.import_price, hour, kind, wholesale), _price(tariff.export_price, hour, kind, wholesale))


def peak_steps(demand_window: np.ndarray | None, steps: int) -> np.ndarray:
    """Per step, whether its import sets the billed peak: the tariff's demand window's steps, or
    every step without one. The bill counts these imports, and every import cap (a plan's, the
    guard's, the gateway's) binds on these steps only: elsewhere an import costs no demand charge."""
    return np.ones(steps, dtype=bool) if demand_window is None else np.asarray(demand_window, dtype=bool)


def billed_peak_steps(config: SimulatorConfig, instants: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> np.ndarray:
    """Per instant, whether the import of the interval it ends sets the month's billed peak
    under the site's tariff (:func:`peak_steps` of :func:`demand_window`): the peak so far,
    and every cap raised to it, count these imports only, on the gateway as in the cloud."""
    instants = pd.DatetimeIndex(instants)
    return peak_steps(demand_window(site_tariff(config), instants, config.timezone, config.country), len(instants))


def demand_window(tariff: Tariff, instants: pd.DatetimeIndex, timezone: str, country: str) -> np.ndarray | None:
    """Which instants' imports count towards the demand charge's peak; None: all of them."""
    if tariff.demand_window is None:
        return None
    hour, kind = local_calendar(pd.DatetimeIndex(instants), timezone, country)
    return within(tariff.demand_window, hour, kind)
