"""The simulated retail grid price: the time-of-use tariff of the configuration's
``grid_price`` (``der_core.tariff.tou_tariff``, periods from ``der_physics.tariff.tou_period``)
with mean-reverting real-time variation and rare spikes on top, the feed-in tariff, and the
grid's carbon intensity. TOU periods are in the site's local time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba.extending import register_jitable

from der_core.config import GridPriceConfig
from der_core.der_data import TOU_PERIODS
from der_core.tariff import FEED_IN_FACTOR
from der_physics import base
from der_physics.tariff import is_holiday, tou_period

OFF_PEAK, SHOULDER, PEAK = range(3)  # indexes into der_data.TOU_PERIODS
PRICE_GRID_S = 900.0
DAY_S = 86_400.0


@dataclass(frozen=True)
class PriceOutput:
    price_per_kwh: np.ndarray
    feed_in_tariff: np.ndarray
    period_index: np.ndarray  # 0 off_peak, 1 shoulder, 2 peak
    carbon_intensity_g_kwh: np.ndarray

    @property
    def period(self) -> np.ndarray:
        return np.asarray(TOU_PERIODS, dtype=object)[self.period_index]


def spike_days(config: GridPriceConfig, seed: int, first_day: int, count: int) -> np.ndarray:
    """Per UTC day from ``first_day``: (happens, start hour, length in hours, height). On rare
    days a scarcity event lifts prices 3-6x for 30-150 minutes in the late afternoon or
    evening (UTC-day slots keep it independent of the time zone)."""
    draws = base.grid_draws(seed, "price_spike", first_day * 4, count * 4, "uniform").reshape(-1, 4)
    happens = (draws[:, 0] < config.spike_probability_per_day).astype(float)
    return np.stack([happens, 15.0 + 6.0 * draws[:, 1], 0.5 + 2.0 * draws[:, 2], 3.0 + 3.0 * draws[:, 3]])


def _utc_days(epoch_s: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """First UTC day, day count, each instant's day (from the first) and UTC hour."""
    first, count = base.grid_span(epoch_s, DAY_S, pad_after=0)
    day = np.floor(epoch_s / DAY_S).astype(np.int64) - first
    hour_utc = (epoch_s - np.floor(epoch_s / DAY_S) * DAY_S) / 3600.0
    return first, count, day, hour_utc


@register_jitable
def _carbon(hour, sun_up, noise):
    """Grid carbon intensity (g/kWh): gas peakers in the evening, grid solar at midday."""
    evening_peakers = 70.0 if hour >= 17.0 and hour < 21.0 else 0.0
    return max(420.0 + evening_peakers - 200.0 * sun_up + 15.0 * noise, 50.0)


@numba.njit(cache=True, nogil=True)
def _carbon_at(hour, sun_up, noise):
    out = np.empty(hour.shape[0])
    for i in range(out.shape[0]):
        out[i] = _carbon(hour[i], sun_up[i], noise[i])
    return out


def carbon_intensity(hour: np.ndarray, sun_up: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Grid carbon intensity (g/kWh) at each instant; ``sun_up`` is the regional solar share."""
    as_array = lambda a: np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=float), np.shape(hour)))  # noqa: E731
    return _carbon_at(as_array(hour), as_array(sun_up), as_array(noise))


@numba.njit(cache=True, nogil=True)
def _tariff(c, period, noise, day, hour_utc, spikes, hour, sun_up, carbon_noise, out):
    """Price, feed-in tariff and carbon intensity, instant by instant. ``c``: off-peak,
    shoulder and peak prices, volatility, base feed-in tariff; ``spikes``: see spike_days."""
    volatility, feed_in_base = c[3], c[4]
    half_volatility = 0.5 * volatility
    for i in range(period.shape[0]):
        p, d = period[i], day[i]
        inside = spikes[0, d] > 0.0 and hour_utc[i] >= spikes[1, d] and hour_utc[i] < spikes[1, d] + spikes[2, d]
        spike = spikes[3, d] if inside else 1.0
        price = max(c[p] * (1.0 + volatility * noise[i]) * spike, 0.0)
        feed_in = feed_in_base * FEED_IN_FACTOR[p] * (1.0 + half_volatility * noise[i])
        out[0, i] = price
        out[1, i] = max(min(feed_in, price), 0.0)  # selling never pays more than buying
        out[2, i] = _carbon(hour[i], sun_up[i], carbon_noise[i])


def simulate(
    config: GridPriceConfig,
    seed: int,
    country: str,
    epoch_s: np.ndarray,
    hour: np.ndarray,
    sun_up: np.ndarray,
    interval_clock: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> PriceOutput:
    """``sun_up``: regional solar share proxy in [0, 1] (clear-sky output / capacity works);
    ``hour``: the local hour of each instant; ``interval_clock``: the local clock of the
    interval each instant ends (:func:`base.interval_clock`), whose tariff period prices it.
    The tariff periods and the UTC day of each instant are shared by every site on the same
    axis."""
    tariff_hour, weekday, local_day = interval_clock
    period = base.derived(tariff_hour, ("tou", country),
                          lambda: tou_period(tariff_hour, weekday, is_holiday(local_day, country)))
    first_day, days, day, hour_utc = base.derived(epoch_s, "utc_days", lambda: _utc_days(epoch_s))
    noise = base.smooth_process(seed, "price", epoch_s, PRICE_GRID_S, phi=0.85, memory=30)
    carbon_noise = base.smooth_process(seed, "carbon", epoch_s, 3600.0, phi=0.8, memory=24)
    out = np.empty((3, len(epoch_s)))
    tariff = np.array([config.off_peak_price, config.shoulder_price, config.peak_price, config.volatility, config.base_feed_in_tariff])
    _tariff(tariff, period, noise, day, hour_utc, spike_days(config, seed, first_day, days), hour, sun_up, carbon_noise, out)
    price, feed_in, carbon = out
    return PriceOutput(price, feed_in, period, carbon)
