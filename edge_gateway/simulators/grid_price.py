"""Retail grid price: time-of-use periods, mean-reverting real-time variation, rare spikes,
feed-in tariff, demand charge and the grid's carbon intensity.

TOU periods are in the site's local time. Weekdays: peak 16:00-21:00, shoulder 07:00-16:00
and 21:00-23:00, off-peak overnight. Weekends and public holidays: shoulder 16:00-21:00,
off-peak otherwise (the shape of common US and Australian residential TOU tariffs).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import holidays
import numpy as np

from edge_gateway.config import GridPriceConfig
from edge_gateway.models.der_data import TOU_PERIODS
from edge_gateway.simulators import base

OFF_PEAK, SHOULDER, PEAK = range(3)  # indexes into der_data.TOU_PERIODS
PRICE_GRID_S = 900.0
DAY_S = 86_400.0
FEED_IN_FACTOR = np.array([0.8, 1.0, 1.6])  # exports are worth more when the grid is short


@dataclass(frozen=True)
class PriceOutput:
    price_per_kwh: np.ndarray
    feed_in_tariff: np.ndarray
    demand_charge: np.ndarray
    period_index: np.ndarray  # 0 off_peak, 1 shoulder, 2 peak
    carbon_intensity_g_kwh: np.ndarray

    @property
    def period(self) -> np.ndarray:
        return np.asarray(TOU_PERIODS, dtype=object)[self.period_index]


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


def tou_period(hour: np.ndarray, weekday: np.ndarray, holiday: np.ndarray) -> np.ndarray:
    workday = (weekday < 5) & ~holiday
    evening = (hour >= 16.0) & (hour < 21.0)
    daytime = ((hour >= 7.0) & (hour < 16.0)) | ((hour >= 21.0) & (hour < 23.0))
    workday_period = np.where(evening, PEAK, np.where(daytime, SHOULDER, OFF_PEAK))
    rest_day_period = np.where(evening, SHOULDER, OFF_PEAK)
    return np.where(workday, workday_period, rest_day_period).astype(np.int8)


def spikes(config: GridPriceConfig, seed: int, epoch_s: np.ndarray) -> np.ndarray:
    """Multiplier >= 1: on rare days a scarcity event lifts prices 3-6x for 30-150 minutes
    in the late afternoon or evening (UTC-day slots keep it independent of the time zone)."""
    first, count = base.grid_span(epoch_s, DAY_S, pad_after=0)
    draws = base.grid_draws(seed, "price_spike", first * 4, count * 4, "uniform").reshape(-1, 4)
    happens = draws[:, 0] < config.spike_probability_per_day
    start_h = 15.0 + 6.0 * draws[:, 1]
    length_h = 0.5 + 2.0 * draws[:, 2]
    height = 3.0 + 3.0 * draws[:, 3]
    day = np.floor(epoch_s / DAY_S).astype(np.int64) - first
    hour_utc = (epoch_s - np.floor(epoch_s / DAY_S) * DAY_S) / 3600.0
    inside = happens[day] & (hour_utc >= start_h[day]) & (hour_utc < start_h[day] + length_h[day])
    return np.where(inside, height[day], 1.0)


def carbon_intensity(hour: np.ndarray, sun_up: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Grid carbon intensity (g/kWh): gas peakers in the evening, grid solar at midday."""
    evening_peakers = np.where((hour >= 17.0) & (hour < 21.0), 70.0, 0.0)
    return np.clip(420.0 + evening_peakers - 200.0 * sun_up + 15.0 * noise, 50.0, None)


def simulate(
    config: GridPriceConfig,
    seed: int,
    country: str,
    epoch_s: np.ndarray,
    hour: np.ndarray,
    weekday: np.ndarray,
    local_day: np.ndarray,
    sun_up: np.ndarray,
) -> PriceOutput:
    """``sun_up``: regional solar share proxy in [0, 1] (clear-sky output / capacity works)."""
    period = tou_period(hour, weekday, is_holiday(local_day, country))
    tou_price = np.array([config.off_peak_price, config.shoulder_price, config.peak_price])[period]
    noise = base.smooth_process(seed, "price", epoch_s, PRICE_GRID_S, phi=0.85, memory=30)
    price = np.clip(tou_price * (1.0 + config.volatility * noise) * spikes(config, seed, epoch_s), 0.0, None)
    feed_in = config.base_feed_in_tariff * FEED_IN_FACTOR[period] * (1.0 + 0.5 * config.volatility * noise)
    feed_in = np.clip(np.minimum(feed_in, price), 0.0, None)  # selling never pays more than buying
    carbon_noise = base.smooth_process(seed, "carbon", epoch_s, 3600.0, phi=0.8, memory=24)
    return PriceOutput(
        price,
        feed_in,
        np.full(epoch_s.shape, config.demand_charge),
        period,
        carbon_intensity(hour, sun_up, carbon_noise),
    )
