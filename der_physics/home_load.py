"""Household demand: always-on base load, HVAC driven by outdoor temperature, lighting driven
by daylight, stochastic appliances and EV charging sessions, with weekday/weekend habits.

Occupancy is the common driver: on weekdays the house empties in working hours, at weekends
it stays busy through the day. Components never exceed the house's ``peak_load_kw`` apart
from EV charging, which has its own circuit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba.extending import register_jitable

from der_core.config import HomeLoadConfig
from der_physics import base

APPLIANCE_GRID_S = 300.0
BURST_GRID_S = 900.0
DAY_S = 86_400.0


@dataclass(frozen=True)
class LoadOutput:
    hvac_kw: np.ndarray
    appliances_kw: np.ndarray
    lighting_kw: np.ndarray
    ev_charging_kw: np.ndarray
    other_kw: np.ndarray

    @property
    def total_kw(self) -> np.ndarray:
        return self.hvac_kw + self.appliances_kw + self.lighting_kw + self.ev_charging_kw + self.other_kw


def occupancy(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Share of the household at home and awake-ish (0..1)."""
    weekday_profile = np.interp(hour, [0, 6, 7.5, 9, 16, 18, 22, 23.5, 24], [0.3, 0.3, 1.0, 0.2, 0.3, 1.0, 1.0, 0.4, 0.3])
    weekend_profile = np.interp(hour, [0, 7, 9, 12, 18, 23, 24], [0.3, 0.3, 1.0, 0.8, 1.0, 0.6, 0.3])
    return np.where(weekend, weekend_profile, weekday_profile)


def activity(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Appliance use intensity (0..1): breakfast and evening peaks, a midday bump at weekends."""
    weekday_profile = np.interp(hour, [0, 5.5, 7, 8.5, 10, 17, 19, 21, 23, 24], [0.05, 0.05, 0.7, 0.5, 0.1, 0.3, 1.0, 0.8, 0.2, 0.05])
    weekend_profile = np.interp(hour, [0, 7, 9, 12, 14, 18, 20, 23, 24], [0.05, 0.1, 0.7, 0.8, 0.5, 0.9, 1.0, 0.3, 0.05])
    return np.where(weekend, weekend_profile, weekday_profile)


@register_jitable
def hvac_kw(capacity_kw, cooling_setpoint, heating_setpoint, temp_air_celsius, occupied):
    """Cooling above and heating below the comfort band; set back (weaker) when nobody is home.

    Demand rises linearly with the temperature gap and saturates at the unit's capacity
    about 10 K beyond the setpoint, a degree-hour model in the style of building energy codes.
    """
    setback = 0.4 + 0.6 * occupied
    cooling = min(max((temp_air_celsius - cooling_setpoint + 1.0) / 10.0, 0.0), 1.0)
    # Internal and solar gains carry a house about 5 K below its heating setpoint.
    heating = min(max((heating_setpoint - 5.0 - temp_air_celsius) / 15.0, 0.0), 1.0)
    return capacity_kw * setback * (cooling + heating)


@register_jitable
def lighting_kw(peak_load_kw, zenith_deg, clear_sky_index, occupied):
    """Lights follow darkness (sun low, or heavy cloud) while people are home."""
    dark = min(max((zenith_deg - 80.0) / 15.0, 0.0), 1.0)
    dim = min(max(0.6 - clear_sky_index, 0.0), 0.6) * 0.5  # overcast days need some light
    return 0.04 * peak_load_kw * min(max(dark + dim, 0.0), 1.0) * occupied


@register_jitable
def appliances_kw(peak_load_kw, intensity, level, burst_draw, burst_size):
    """Background appliance use (``level``: a persistent lognormal factor) plus bursts (oven,
    kettle, washer) more likely at busy times."""
    burst = 0.8 + 2.2 * burst_size if burst_draw < 0.25 * intensity else 0.0
    return 0.12 * peak_load_kw * intensity * level + burst


def ev_sessions(config: HomeLoadConfig, seed: int, local_day: np.ndarray, weekend_of_day) -> tuple[np.ndarray, np.ndarray]:
    """Per local day: arrival hour and hours of charging (0 when the car does not charge)."""
    draws = base.grid_draws(seed, "ev", int(local_day.min()) * 4, (int(local_day.max() - local_day.min()) + 1) * 4, "uniform")
    draws = draws.reshape(-1, 4)
    weekend = weekend_of_day
    plugs_in = draws[:, 0] < np.where(weekend, 0.45, 0.7)
    arrival = np.where(weekend, 10.0 + 10.0 * draws[:, 1], 17.0 + 3.5 * draws[:, 1])
    energy_kwh = np.minimum(4.0 + 26.0 * draws[:, 2] ** 1.5, 0.9 * config.ev_battery_kwh)
    hours = np.where(plugs_in & (config.ev_charging_kw > 0), energy_kwh / max(config.ev_charging_kw, 1e-9), 0.0)
    return arrival, hours


def ev_charging_kw(config: HomeLoadConfig, seed: int, hour: np.ndarray, local_day: np.ndarray) -> np.ndarray:
    """A car arrives in the evening (or any time at weekends) and charges at full rate until full;
    a session may run past midnight, so each instant checks today's and yesterday's session."""
    if config.ev_charger_kw <= 0:
        return np.zeros_like(hour)
    first_day, today = base.derived(local_day, "ev_days", lambda: _day_index(local_day))
    days = np.arange(first_day, int(local_day.max()) + 1)
    weekend_of_day = ((days + 3) % 7) >= 5  # 1970-01-01 was a Thursday (weekday 3)
    arrival, hours = ev_sessions(config, seed, days, weekend_of_day)
    return _ev_charging(config.ev_charging_kw, hour, today, arrival, hours)


def _day_index(local_day: np.ndarray) -> tuple[int, np.ndarray]:
    first_day = int(local_day.min()) - 1  # the day before the first: its session may run past midnight
    return first_day, (local_day - first_day).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _ev_charging(rate_kw, hour, today, arrival, hours):
    out = np.empty(hour.shape[0])
    for i in range(out.shape[0]):
        d = today[i]
        since_today = hour[i] - arrival[d]
        since_yesterday = hour[i] + 24.0 - arrival[d - 1]
        charging = (since_today >= 0 and since_today < hours[d]) or (since_yesterday >= 0 and since_yesterday < hours[d - 1])
        out[i] = rate_kw if charging else 0.0
    return out


def simulate(
    config: HomeLoadConfig,
    seed: int,
    epoch_s: np.ndarray,
    hour: np.ndarray,
    weekday: np.ndarray,
    local_day: np.ndarray,
    temp_air_celsius: np.ndarray,
    zenith_deg: np.ndarray,
    clear_sky_index: np.ndarray,
) -> LoadOutput:
    """``hour``, ``weekday`` and ``local_day`` come from one :func:`base.local_clock`: the
    occupancy and activity profiles, which depend on them alone, are shared through it."""
    occupied = base.derived(hour, "occupancy", lambda: occupancy(hour, weekday >= 5))
    intensity = base.derived(hour, "activity", lambda: activity(hour, weekday >= 5))
    other_noise = base.smooth_process(seed, "other_load", epoch_s, 900.0, 0.6, 12)
    level = np.exp(0.35 * base.smooth_process(seed, "appliance", epoch_s, APPLIANCE_GRID_S, phi=0.7, memory=14) - 0.06)
    burst_draw = base.slot_process(seed, "appliance_burst", epoch_s, BURST_GRID_S)
    burst_size = base.slot_process(seed + 1, "appliance_burst", epoch_s, BURST_GRID_S)
    out = np.empty((4, len(hour)))
    _house(
        np.array([config.base_load_kw, config.peak_load_kw, config.hvac_capacity_kw, config.cooling_setpoint_celsius,
                  config.heating_setpoint_celsius]),
        occupied, intensity, temp_air_celsius, zenith_deg, clear_sky_index, other_noise, level, burst_draw, burst_size, out,
    )
    hvac, appliances, lights, other = out
    return LoadOutput(hvac, appliances, lights, ev_charging_kw(config, seed, hour, local_day), other)


@numba.njit(cache=True, nogil=True)
def _house(c, occupied, intensity, temp, zenith, kt, other_noise, level, burst_draw, burst_size, out):
    """The house's own circuits, instant by instant: they share ``peak_load_kw`` and the
    appliances give way first. ``c``: base, peak, HVAC capacity, cooling and heating setpoints."""
    base_kw, peak_kw, hvac_capacity_kw, cooling_setpoint, heating_setpoint = c[0], c[1], c[2], c[3], c[4]
    for i in range(occupied.shape[0]):
        other = max(base_kw * (1.0 + 0.08 * other_noise[i]), 0.0)
        hvac = hvac_kw(hvac_capacity_kw, cooling_setpoint, heating_setpoint, temp[i], occupied[i])
        lights = lighting_kw(peak_kw, zenith[i], kt[i], occupied[i])
        appliances = appliances_kw(peak_kw, intensity[i], level[i], burst_draw[i], burst_size[i])
        headroom = max(peak_kw - other - hvac - lights, 0.0)
        out[0, i], out[1, i], out[2, i], out[3, i] = hvac, min(appliances, headroom), lights, other
