"""The PV a site will make over a horizon, as known when the forecast is issued: one function,
:func:`pv_forecast`, chosen by what the site is.

* A simulated site (a simulator configuration, no :class:`MeasuredPV`) gets the simulator's
  own day-ahead weather forecast run through the solar physics it runs on
  (:func:`simulated_pv_forecast`): the forecast error its simulated weather was built with.
* A declared site (``der_core.site_file``) has no simulator behind it. Its PV comes from its
  declared system (kWp, tilt, azimuth, inverter limit, location) through pvlib's clear-sky
  physics (``der_physics.solar.clear_sky_output``: Ineichen clear sky under the place's
  climatological turbidity, Erbs split, isotropic transposition, PVWatts inverter clipped at
  the AC limit), scaled per instant (:func:`declared_pv_forecast`)
  by the clear-sky index of the newest weather forecast issued at or before the issue time
  where a weather source gives one, else by the site's own recent clear-sky index
  (:func:`recent_clear_sky_index`).

Instants follow the readings' convention: the value at ``t`` describes the interval ending at ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.forecasting import clear_sky_index as csi
from cloud.forecasting.weather import CLEAR_SKY_INDEX, TEMP, WeatherForecast
from der_core import der_data as dd
from der_core.config import SimulatorConfig, SolarConfig
from der_physics import base, solar, weather

#: How far back the site's own clear-sky index looks: yesterday, the most recent whole day.
PERSISTENCE_WINDOW = pd.Timedelta(days=1)


@dataclass(frozen=True)
class MeasuredPV:
    """What a declared site's PV forecast knows besides its declaration: its measured PV
    (kW per reading instant) and the weather forecasts available to it (None: no source)."""

    pv_history_kw: pd.Series
    weather: WeatherForecast | None = None


def pv_forecast(config: SimulatorConfig, issued_at: pd.Timestamp, instants: pd.DatetimeIndex,
                measured: MeasuredPV | None = None) -> solar.SolarOutput:
    """The PV forecast of the site: a declared site's (``measured`` given) from its declared
    system and what it measured (:func:`declared_pv_forecast`), a simulated site's from its
    simulator's weather forecast (:func:`simulated_pv_forecast`)."""
    if measured is None:
        return simulated_pv_forecast(config, issued_at, instants)
    return declared_pv_forecast(config.solar, config.device_id, measured, issued_at, instants)


def simulated_pv_forecast(config: SimulatorConfig, issued_at: pd.Timestamp, instants: pd.DatetimeIndex) -> solar.SolarOutput:
    """PV from the simulated site's day-ahead weather forecast (error growing with lead time)
    through the same solar physics the site runs on."""
    axis = base.TimeAxis.from_times(instants)
    seed, site = config.effective_seed, config.solar
    actual = weather.simulate(seed, site.latitude, site.longitude, axis.epoch_s, axis.day_of_year)
    lead_h = (axis.epoch_s - issued_at.timestamp()) / 3600.0
    predicted = weather.forecast(actual, seed, axis.epoch_s, lead_h)
    return solar.simulate(site, axis, predicted.clear_sky_index, predicted.temp_air_celsius, predicted.wind_speed_m_s)


def declared_pv_forecast(system: SolarConfig, device_id: str, measured: MeasuredPV, issued_at: pd.Timestamp,
                         instants: pd.DatetimeIndex) -> solar.SolarOutput:
    """A declared system's PV: clear-sky output scaled by a clear-sky index per instant.

    Where the weather source has a forecast for the instant issued at or before ``issued_at``,
    its clear-sky index and air temperature run through the solar physics (the index scales the
    clear-sky GHI before it is split and transposed, as for a simulated site's weather).
    Elsewhere the output is the clear-sky output (at the forecast's air temperature where it
    gives one, else 20 °C; 1 m/s wind) times the site's own
    clear-sky index of the day before ``issued_at`` (:func:`recent_clear_sky_index`): the
    persistence of yesterday's sky, which also absorbs what the declaration gets wrong
    (soiling, shading, a nameplate above what the array delivers). Never above the inverter's
    AC limit.
    """
    times = pd.DatetimeIndex(instants)
    index, temp = _weather_at(measured.weather, system, device_id, issued_at, times)
    forecast = np.isfinite(index)
    out = solar.clear_sky_output(system, times, np.where(forecast, index, 1.0),
                                 np.where(np.isfinite(temp), temp, solar.CLEAR_AIR_CELSIUS))
    if forecast.all():
        return out
    persisted = recent_clear_sky_index(system, measured.pv_history_kw, issued_at)
    ac_kw = np.where(forecast, out.generation_kw, np.minimum(out.generation_kw * persisted, system.inverter_limit_kw))
    return solar.SolarOutput(ac_kw, out.poa_irradiance_w_m2, out.ghi_w_m2, out.clear_sky_ghi_w_m2,
                             out.cell_temp_celsius, out.efficiency_percent)


def recent_clear_sky_index(system: SolarConfig, pv_history_kw: pd.Series, issued_at: pd.Timestamp) -> float:
    """The site's clear-sky index over the :data:`PERSISTENCE_WINDOW` before ``issued_at``: its
    measured PV over the declared system's clear-sky output at the same readings
    (``der_physics.solar.clearsky_ac_kw``), sun-up readings only, weighted by clear-sky output
    (``csi.span_index``: the forecasters' index and sun-up rule). 1 (a clear sky) when no such
    reading was measured: without a measurement the declaration is all there is to go on."""
    if pv_history_kw.empty:  # an empty series need not have a time index to slice
        return 1.0
    past = pv_history_kw.loc[issued_at - PERSISTENCE_WINDOW: issued_at].dropna()
    past = past[past.index > issued_at - PERSISTENCE_WINDOW]
    if past.empty:
        return 1.0
    clear = solar.clearsky_ac_kw(system, pd.DatetimeIndex(past.index))
    index = csi.span_index(past.to_numpy(dtype=float), clear, csi.sun_up(clear, system.inverter_limit_kw))
    return index if np.isfinite(index) else 1.0


def _weather_at(source: WeatherForecast | None, system: SolarConfig, device_id: str, issued_at: pd.Timestamp,
                instants: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Clear-sky index (within ``[0, csi.MAX_RATIO]``) and air temperature of the newest forecast
    issued at or before ``issued_at`` for each instant; NaN where the source has none."""
    if source is None:
        nothing = np.full(len(instants), np.nan)
        return nothing, nothing.copy()
    site = {dd.DEVICE_ID: device_id, "latitude": system.latitude, "longitude": system.longitude}
    seen = source.forecast(site, pd.DatetimeIndex([issued_at] * len(instants)), instants)
    index = np.clip(seen[CLEAR_SKY_INDEX].to_numpy(dtype=float), 0.0, csi.MAX_RATIO)
    return index, seen[TEMP].to_numpy(dtype=float)
