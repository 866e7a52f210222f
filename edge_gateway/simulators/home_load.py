"""Household demand: always-on base load, HVAC driven by outdoor temperature, lighting driven
by daylight, stochastic appliances and EV charging sessions, with weekday/weekend habits.

Occupancy is the common driver: on weekdays the house empties in working hours, at weekends
it stays busy through the day. Components never exceed the house's ``peak_load_kw`` apart
from EV charging, which has its own circuit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_gateway.config import HomeLoadConfig
from edge_gateway.simulators import base

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


def hvac_kw(config: HomeLoadConfig, temp_air_celsius: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """Cooling above and heating below the comfort band; set back (weaker) when nobody is home.

    Demand rises linearly with the temperature gap and saturates at the unit's capacity
    about 10 K beyond the setpoint, a degree-hour model in the style of building energy codes.
    """
    setback = 0.4 + 0.6 * occupied
    cooling = np.clip((temp_air_celsius - config.cooling_setpoint_celsius + 1.0) / 10.0, 0.0, 1.0)
    # Internal and solar gains carry a house about 5 K below its heating setpoint.
    heating = np.clip((config.heating_setpoint_celsius - 5.0 - temp_air_celsius) / 15.0, 0.0, 1.0)
    return config.hvac_capacity_kw * setback * (cooling + heating)


def lighting_kw(config: HomeLoadConfig, zenith_deg: np.ndarray, clear_sky_index: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """Lights follow darkness (sun low, or heavy cloud) while people are home."""
    dark = np.clip((zenith_deg - 80.0) / 15.0, 0.0, 1.0)
    dim = np.clip(0.6 - clear_sky_index, 0.0, 0.6) * 0.5  # overcast days need some light
    return 0.04 * config.peak_load_kw * np.clip(dark + dim, 0.0, 1.0) * occupied


def appliances_kw(config: HomeLoadConfig, seed: int, epoch_s: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Background appliance use plus bursts (oven, kettle, washer) more likely at busy times."""
    level = np.exp(0.35 * base.smooth_process(seed, "appliance", epoch_s, APPLIANCE_GRID_S, phi=0.7, memory=14) - 0.06)
    burst_draw = base.slot_process(seed, "appliance_burst", epoch_s, BURST_GRID_S)
    burst_size = base.slot_process(seed + 1, "appliance_burst", epoch_s, BURST_GRID_S)
    burst = np.where(burst_draw < 0.25 * intensity, (0.8 + 2.2 * burst_size), 0.0)
    return 0.12 * config.peak_load_kw * intensity * level + burst


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


def ev_charging_kw(config: HomeLoadConfig, seed: int, hour: np.ndarray, local_day: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """A car arrives in the evening (or any time at weekends) and charges at full rate until full;
    a session may run past midnight, so each instant checks today's and yesterday's session."""
    if not config.has_ev or config.ev_charging_kw <= 0:
        return np.zeros_like(hour)
    first_day = int(local_day.min()) - 1
    days = np.arange(first_day, int(local_day.max()) + 1)
    weekend_of_day = ((days + 3) % 7) >= 5  # 1970-01-01 was a Thursday (weekday 3)
    arrival, hours = ev_sessions(config, seed, days, weekend_of_day)
    today = (local_day - first_day).astype(np.int64)
    since_today = hour - arrival[today]
    since_yesterday = hour + 24.0 - arrival[today - 1]
    charging = ((since_today >= 0) & (since_today < hours[today])) | (
        (since_yesterday >= 0) & (since_yesterday < hours[today - 1])
    )
    return np.where(charging, config.ev_charging_kw, 0.0)


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
    weekend = weekday >= 5
    occupied = occupancy(hour, weekend)
    other = config.base_load_kw * (1.0 + 0.08 * base.smooth_process(seed, "other_load", epoch_s, 900.0, 0.6, 12))
    other = np.clip(other, 0.0, None)
    hvac = hvac_kw(config, temp_air_celsius, occupied)
    lights = lighting_kw(config, zenith_deg, clear_sky_index, occupied)
    appliances = appliances_kw(config, seed, epoch_s, activity(hour, weekend))
    # The house's own circuits share peak_load_kw; appliances give way first.
    headroom = np.clip(config.peak_load_kw - other - hvac - lights, 0.0, None)
    appliances = np.minimum(appliances, headroom)
    ev = ev_charging_kw(config, seed, hour, local_day, weekday)
    return LoadOutput(hvac, appliances, lights, ev, other)
