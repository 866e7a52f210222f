"""Weather forecasts for each site from outside services, stored with their issue time and read
back issue-time correctly.

* A :class:`WeatherSource` turns one request into rows of ``weather_forecasts``
  (:mod:`cloud.store.schema`): one per (issue, target instant), ``ts`` the instant the values
  describe, i.e. the interval ending there (the readings' convention). Adapters
  (:mod:`.open_meteo`, :mod:`.forecast_solar`): :class:`OpenMeteo` (the forecast API),
  :class:`OpenMeteoArchive` (its historical-forecast archive, issued at each value's own
  instant), :class:`OpenMeteoPreviousRuns` (its archived forecasts made N days before, for
  day-ahead backtests) and :class:`ForecastSolar` (PV power of the declared plane).
* :mod:`.stored`: :func:`fetch_weather` stores one issue of a live source per site and hour;
  :func:`backfill_weather` and :func:`backfill_previous_runs` store the days a site lacks.
  :class:`StoredWeatherForecast` is a :class:`cloud.forecasting.weather.WeatherForecast`
  reading the store: for each target, the newest issue made strictly before the forecast's
  own issue time, so nothing published later can reach a forecast.

Every request goes through :mod:`cloud.live.http` (timeouts, retries, ``Retry-After``, one-line
errors); where a site is comes from its declaration (:mod:`der_core.site_file`) when it has one.
Home Assistant's client libraries for both services are asynchronous (aiohttp) and would bypass
that shared retry and rate-limit behaviour, so each adapter here is a thin one over it.
"""

from cloud.live.weather.forecast_solar import FORECAST_SOLAR, ForecastSolar, forecast_solar_azimuth, forecast_solar_rows
from cloud.live.weather.open_meteo import (
    OPEN_METEO,
    OPEN_METEO_ARCHIVE,
    OPEN_METEO_PREVIOUS_RUNS,
    OPEN_METEO_UNITS,
    OPEN_METEO_VARIABLES,
    RESOLUTIONS,
    OpenMeteo,
    OpenMeteoArchive,
    OpenMeteoPreviousRuns,
    open_meteo_rows,
)
from cloud.live.weather.sources import Connection, Place, WeatherSource, site_place
from cloud.live.weather.stored import (
    NIGHT_GHI_W_M2,
    StoredWeatherForecast,
    backfill_previous_runs,
    backfill_weather,
    clear_sky_index,
    fetch_weather,
    missing_spans,
    pv_clear_sky_index,
)

__all__ = [
    "FORECAST_SOLAR", "NIGHT_GHI_W_M2", "OPEN_METEO", "OPEN_METEO_ARCHIVE", "OPEN_METEO_PREVIOUS_RUNS", "OPEN_METEO_UNITS",
    "OPEN_METEO_VARIABLES", "RESOLUTIONS", "Connection", "ForecastSolar", "OpenMeteo", "OpenMeteoArchive",
    "OpenMeteoPreviousRuns", "Place", "StoredWeatherForecast", "WeatherSource", "backfill_previous_runs",
    "backfill_weather", "clear_sky_index", "fetch_weather", "forecast_solar_azimuth", "forecast_solar_rows",
    "missing_spans", "open_meteo_rows", "pv_clear_sky_index", "site_place",
]
