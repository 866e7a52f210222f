"""Local weather: air temperature, wind and cloudiness (clear-sky index), seeded.

Cloudiness has two layers, as measured clear-sky-index series do: a daily regime (clear,
broken or overcast days, persistent over a few days, clearer in summer) drawn from a beta
distribution, and intra-day fluctuations whose size peaks on broken-cloud days.
Temperature follows a latitude-driven climatology, a seasonal and a diurnal cycle (the
diurnal range wider on clear days) and persistent day-to-day anomalies.

A day-ahead weather forecast is the same weather seen through an error that grows with
lead time (:func:`forecast`), as numerical weather prediction errors do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import special

from der_physics import base

DAY_S = 86_400.0
CLOUD_GRID_S = 900.0
HOUR_S = 3_600.0


@dataclass(frozen=True)
class Weather:
    temp_air_celsius: np.ndarray
    wind_speed_m_s: np.ndarray
    clear_sky_index: np.ndarray  # all-sky GHI / clear-sky GHI
    day_clearness: np.ndarray  # the daily regime behind it


def seasonal_phase(latitude: float, day_of_year: np.ndarray) -> np.ndarray:
    """+1 at local midsummer, -1 at midwinter (the hemisphere decides which month that is)."""
    summer_doy = 172.0 if latitude >= 0 else 355.0
    return np.cos(2 * np.pi * (day_of_year - summer_doy) / 365.25)


def day_clearness(seed: int, latitude: float, epoch_s: np.ndarray, day_of_year: np.ndarray) -> np.ndarray:
    """Daily cloud regime in (0, 1): 1 = clear all day. Persistent over a few days."""
    first, count = base.grid_span(epoch_s, DAY_S)
    latent = base.ar1_grid(seed, "cloud_day", first, count, phi=0.55, memory=10)
    grid_doy = ((np.arange(first, first + count) * DAY_S / DAY_S) % 365.25) + 1.0
    mean = np.clip(0.78 + 0.12 * seasonal_phase(latitude, grid_doy), 0.2, 0.95)
    concentration = 3.5
    regime = special.betaincinv(mean * concentration, (1 - mean) * concentration, special.ndtr(latent))  # beta quantile
    return base.interpolate(epoch_s, DAY_S, np.clip(regime, 0.03, 0.995))


def clear_sky_index(seed: int, latitude: float, epoch_s: np.ndarray, day_of_year: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    regime = day_clearness(seed, latitude, epoch_s, day_of_year)
    fluctuation = base.smooth_process(seed, "cloud_intraday", epoch_s, CLOUD_GRID_S, phi=0.8, memory=24)
    return _clear_sky_index(regime, fluctuation), regime


@numba.njit(cache=True, nogil=True)
def _clear_sky_index(regime: np.ndarray, fluctuation: np.ndarray) -> np.ndarray:
    kt = np.empty(regime.shape[0])
    for i in range(kt.shape[0]):
        spread = 0.8 * np.sqrt(regime[i] * (1.0 - regime[i]))  # broken-cloud days vary most
        kt[i] = min(max(regime[i] + spread * fluctuation[i], 0.03), 1.08)
    return kt


def annual_mean_temp_celsius(latitude: float) -> float:
    """A coarse climatology: warm tropics, cool high latitudes."""
    return 29.0 - 0.42 * abs(latitude)


def simulate(seed: int, latitude: float, longitude: float, epoch_s: np.ndarray, day_of_year: np.ndarray) -> Weather:
    kt, regime = clear_sky_index(seed, latitude, epoch_s, day_of_year)
    # Seasons lag the sun by ~25 days; the phase depends on the hemisphere and the instants only.
    season = base.derived(day_of_year, ("season", latitude >= 0), lambda: seasonal_phase(latitude, day_of_year - 25.0))
    solar_hour = ((epoch_s / HOUR_S) + longitude / 15.0) % 24.0
    diurnal = np.cos(2 * np.pi * (solar_hour - 15.0) / 24.0)
    anomaly_day = base.smooth_process(seed, "temp_day", epoch_s, DAY_S, phi=0.7, memory=12)
    anomaly_hour = base.smooth_process(seed, "temp_hour", epoch_s, HOUR_S, phi=0.8, memory=24)
    wind_noise = base.smooth_process(seed, "wind", epoch_s, HOUR_S, phi=0.85, memory=24)
    temp, wind = _temperature_and_wind(
        annual_mean_temp_celsius(latitude), 1.5 + 0.1 * abs(latitude), season, regime, diurnal, anomaly_day, anomaly_hour, wind_noise
    )
    return Weather(temp, wind, kt, regime)


@numba.njit(cache=True, nogil=True)
def _temperature_and_wind(annual_mean, seasonal_amplitude, season, regime, diurnal, anomaly_day, anomaly_hour, wind_noise):
    """Air temperature: climatology + season + a diurnal swing wider on clear days + day-to-day
    and hourly anomalies; wind: a positive, persistent process around 1-2.5 m/s."""
    temp, wind = np.empty(season.shape[0]), np.empty(season.shape[0])
    for i in range(temp.shape[0]):
        diurnal_amplitude = 2.0 + 4.0 * regime[i]
        temp[i] = annual_mean + seasonal_amplitude * season[i] + diurnal_amplitude * diurnal[i] + 1.8 * anomaly_day[i] + 0.7 * anomaly_hour[i]
        wind[i] = 1.0 + 1.5 * abs(wind_noise[i])
    return temp, wind


def forecast(actual: Weather, seed: int, epoch_s: np.ndarray, lead_hours: np.ndarray) -> Weather:
    """A forecast of ``actual`` issued ``lead_hours`` before each instant.

    Errors grow with lead time like NWP errors (about 1 K and 0.08 clear-sky index at a few
    hours, roughly doubling by the next day); the error process is seeded separately so
    actual weather never depends on whether a forecast was made.
    """
    growth = np.sqrt(np.clip(lead_hours, 0.0, None) / 24.0)
    noise = base.smooth_process(seed, "forecast_error", epoch_s, HOUR_S, phi=0.9, memory=36)
    kt = np.clip(actual.clear_sky_index + (0.04 + 0.12 * growth) * noise, 0.03, 1.08)
    temp = actual.temp_air_celsius + (0.5 + 1.5 * growth) * noise
    return Weather(temp, actual.wind_speed_m_s, kt, actual.day_clearness)
