"""Weather forecasts for each site from outside services, stored with their issue time and read
back issue-time correctly.

* A :class:`WeatherSource` turns one request into rows of ``weather_forecasts``
  (:mod:`cloud.store.schema`): one per (issue, target instant), ``ts`` the instant the values
  describe, i.e. the interval ending there (the readings' convention). Adapters:
  :class:`OpenMeteo` (the forecast API), :class:`OpenMeteoArchive` (its historical-forecast
  archive, for backfills) and :class:`ForecastSolar` (PV power of the declared plane).
* :func:`fetch_weather` stores one issue of a live source per site and hour;
  :func:`backfill_weather` stores the archive's days a site lacks.
* :class:`StoredWeatherForecast` is a :class:`cloud.forecasting.weather.WeatherForecast`
  reading the store: for each target, the newest issue made strictly before the forecast's
  own issue time, so nothing published later can reach a forecast.

Every request goes through :mod:`cloud.live.http` (timeouts, retries, ``Retry-After``, one-line
errors); where a site is comes from its declaration (:mod:`der_core.site_file`) when it has one.
Home Assistant's client libraries for both services are asynchronous (aiohttp) and would bypass
that shared retry and rate-limit behaviour, so each adapter here is a thin one over it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any, Protocol

import numpy as np
import pandas as pd

from cloud.feature_engineering.physics import MAX_RATIO, NIGHT_SHARE
from cloud.forecasting.weather import CLEAR_SKY_INDEX, TEMP, WEATHER_COLUMNS
from cloud.live.http import HttpClient, MalformedResponse, RetryPolicy, Service, field
from cloud.optimization.pv_forecast import clear_sky_output
from cloud.store import schema as s
from der_core import der_data as dd
from der_core.config import SolarConfig
from der_core.errors import ConfigError
from der_core.site_file import declared_site

OPEN_METEO = Service("Open-Meteo", "OPEN_METEO", "https://api.open-meteo.com/v1")
OPEN_METEO_ARCHIVE = Service("Open-Meteo archive", "OPEN_METEO_ARCHIVE", "https://historical-forecast-api.open-meteo.com/v1")
FORECAST_SOLAR = Service("Forecast.Solar", "FORECAST_SOLAR", "https://api.forecast.solar",
                         key_variable="FORECAST_SOLAR_API_KEY")

#: Open-Meteo variable -> our column. Radiation is the mean over the preceding step (15 min or
#: 1 h), which is our "interval ending at ts"; temperature, cloud cover and wind are the
#: values at the instant (open-meteo.com/en/docs, "15-minutely" and "hourly" parameter tables).
OPEN_METEO_VARIABLES: Mapping[str, str] = {
    "shortwave_radiation": s.GHI, "direct_normal_irradiance": s.DNI, "diffuse_radiation": s.DHI,
    "temperature_2m": s.TEMP_AIR, "cloud_cover": s.CLOUD_COVER, "wind_speed_10m": s.WIND_SPEED,
}
#: The units asked for (``wind_speed_unit=ms``; Celsius is the default); a body in others is refused.
OPEN_METEO_UNITS: Mapping[str, str] = {"temperature_2m": "°C", "wind_speed_10m": "m/s"}
RESOLUTIONS = ("minutely_15", "hourly")
#: Clear-sky GHI (W/m2) below which the sun counts as down: the ``NIGHT_SHARE`` of the
#: 1000 W/m2 a PV rating refers to, as the measured clear-sky ratio uses it (index 0, not a
#: division by almost nothing at dawn and dusk).
NIGHT_GHI_W_M2 = NIGHT_SHARE * 1000.0


@dataclass(frozen=True)
class Place:
    """Where a site is and, if it has PV, its plane (compass azimuth, 180 = south)."""

    device_id: str
    latitude: float
    longitude: float
    altitude_m: float = 0.0
    pv_kwp: float = 0.0
    tilt_degrees: float | None = None
    azimuth_degrees: float | None = None


def site_place(site: Mapping[str, Any]) -> Place:
    """The place of a ``sites`` row (``store.sites()``): its declaration's location and PV
    when it is a declared site, else the row's own columns."""
    declaration = declared_site(site)
    device_id = str(site.get(dd.DEVICE_ID))
    if declaration is not None:
        where, pv = declaration.location, declaration.pv
        return Place(device_id, where.latitude, where.longitude, where.altitude_m, pv.capacity_kwp if pv else 0.0,
                     pv.tilt_degrees if pv else None, pv.azimuth_degrees if pv else None)
    values = {k: site.get(k) for k in ("latitude", "longitude", "altitude_m", "pv_capacity_kw", "tilt_degrees",
                                       "azimuth_degrees")}
    if not all(_given(values[k]) for k in ("latitude", "longitude")):
        raise ConfigError(f"site {device_id}: no latitude/longitude; declare its location (docs/operations.md)")
    return Place(device_id, float(values["latitude"]), float(values["longitude"]),
                 float(values["altitude_m"]) if _given(values["altitude_m"]) else 0.0,
                 float(values["pv_capacity_kw"]) if _given(values["pv_capacity_kw"]) else 0.0,
                 float(values["tilt_degrees"]) if _given(values["tilt_degrees"]) else None,
                 float(values["azimuth_degrees"]) if _given(values["azimuth_degrees"]) else None)


def _given(value: Any) -> bool:
    return value is not None and value == value


class WeatherSource(Protocol):
    """One weather service. ``fetch`` returns rows of ``weather_forecasts`` for the site with
    targets in ``[start, end)`` (either open), known before ``now``: a live source stamps its
    issue ``now`` (or the model run it reports), an archive keeps the values issued before it."""

    name: str

    def fetch(self, site: Mapping[str, Any], now: pd.Timestamp, start: pd.Timestamp | None = None,
              end: pd.Timestamp | None = None) -> pd.DataFrame:
        ...


@dataclass(frozen=True)
class Connection:
    """How an adapter reaches its service: the environment (``DER_<SERVICE>_URL``, keys), the
    retry policy and the sleep between attempts (a parameter so that tests see the waits)."""

    environ: Mapping[str, str] = default(default_factory=lambda: os.environ, repr=False)
    policy: RetryPolicy = RetryPolicy()
    sleep: Callable[[float], None] = time.sleep

    def client(self, service: Service) -> HttpClient:
        return HttpClient(service, self.policy, environ=self.environ, sleep=self.sleep)


def _rows(place: Place, source: str, issued_at: pd.Timestamp | pd.DatetimeIndex, ts: pd.DatetimeIndex,
          values: Mapping[str, np.ndarray], start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """The table's rows for ``ts`` within ``[start, end)``; a target the service left empty
    (beyond its horizon: all values null) is no row."""
    frame = pd.DataFrame({dd.DEVICE_ID: place.device_id, s.SOURCE: source, s.ISSUED_AT: issued_at, dd.TS: ts,
                          **{c: values.get(c, np.full(len(ts), np.nan)) for c in s.WEATHER_FIELDS}})
    keep = frame[list(s.WEATHER_FIELDS)].notna().any(axis=1)
    if start is not None:
        keep &= frame[dd.TS] >= start
    if end is not None:
        keep &= frame[dd.TS] < end
    return frame[keep].reset_index(drop=True)


def _numbers(values: Any, path: str, service: str, length: int) -> np.ndarray:
    """``values`` (the body's field ``path``) as floats, JSON null as NaN; one line otherwise."""
    try:
        array = np.asarray(values, dtype="float64")  # JSON null -> NaN
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (length,):
        raise MalformedResponse(f"{service}: field {path!r} is not a list of {length} numbers "
                                "(expected as the service documents it)")
    return array


def open_meteo_rows(payload: Any, place: Place, source: str, resolution: str,
                    issued_at: pd.Timestamp | None, start: pd.Timestamp | None = None,
                    end: pd.Timestamp | None = None) -> pd.DataFrame:
    """Rows from an Open-Meteo body (forecast or archive): times in ``unixtime`` or ISO 8601
    local to ``utc_offset_seconds`` (0 with ``timezone=GMT``), so every ``ts`` is a UTC
    instant. ``issued_at`` None stamps each row with its own ``ts`` (the archive's rule)."""
    name = OPEN_METEO.name
    times = field(payload, f"{resolution}.time", name)
    if not isinstance(times, list):
        raise MalformedResponse(f"{name}: field '{resolution}.time' is not a list (expected as the service documents it)")
    units = payload.get(f"{resolution}_units") or {}
    for variable, unit in OPEN_METEO_UNITS.items():
        if variable in units and units[variable] != unit:
            raise MalformedResponse(f"{name}: {resolution}_units.{variable} is {units[variable]!r}, expected {unit!r}")
    try:
        if all(isinstance(t, (int, float)) for t in times):
            ts = pd.DatetimeIndex(pd.to_datetime(times, unit="s", utc=True))
        else:
            offset = pd.Timedelta(seconds=int(payload.get("utc_offset_seconds") or 0))
            ts = pd.DatetimeIndex(pd.to_datetime(times) - offset).tz_localize("UTC")
    except (TypeError, ValueError):
        raise MalformedResponse(f"{name}: field '{resolution}.time' holds something other than times") from None
    ts = ts.astype("datetime64[us, UTC]")
    values = {ours: _numbers(field(payload, f"{resolution}.{theirs}", name), f"{resolution}.{theirs}", name, len(ts))
              for theirs, ours in OPEN_METEO_VARIABLES.items()}
    return _rows(place, source, ts if issued_at is None else issued_at, ts, values, start, end)


def _check_resolution(resolution: str) -> str:
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"Open-Meteo resolution {resolution!r}: expected one of {', '.join(RESOLUTIONS)}")
    return resolution


def _open_meteo_params(place: Place, resolution: str) -> dict[str, Any]:
    return {"latitude": round(place.latitude, 4), "longitude": round(place.longitude, 4),
            resolution: ",".join(OPEN_METEO_VARIABLES), "timezone": "GMT", "timeformat": "unixtime",
            "wind_speed_unit": "ms"}


@dataclass(frozen=True)
class OpenMeteo:
    """Open-Meteo's forecast API (no key). It reports no model run time per location, so an
    issue is stamped with the fetch time: a forecast made earlier cannot have seen it."""

    resolution: str = "minutely_15"
    forecast_days: int = 3
    connection: Connection = default(default_factory=Connection)
    name: str = "open-meteo"

    def fetch(self, site, now, start=None, end=None) -> pd.DataFrame:
        place, resolution = site_place(site), _check_resolution(self.resolution)
        params = {**_open_meteo_params(place, resolution), "forecast_days": self.forecast_days}
        with self.connection.client(OPEN_METEO) as client:
            payload = client.json("forecast", params)
        return open_meteo_rows(payload, place, self.name, resolution, _utc(now), start, end)


@dataclass(frozen=True)
class OpenMeteoArchive:
    """Open-Meteo's historical-forecast archive, for backfills.

    The archive gives no issue time: it stitches, for each hour, the forecast of the model run
    closest to it (the first hours after each run's initialisation, runs every 1 to 6 h,
    published hours after they start; openmeteo.substack.com "Introducing the Historical
    Forecast API", open-meteo.com/en/docs/single-runs-api). A value for ``ts`` was therefore
    only known around ``ts`` itself, so it is stored as issued at ``ts``: it can inform what
    is known of the past (training, evaluation) and never a forecast of a later instant.
    Stamping a day's values as issued the day before would hand day-ahead forecasts the skill
    of a nowcast. A day-ahead backtest needs forecasts as issued (Open-Meteo's previous-runs or
    single-runs APIs), not this archive.
    """

    resolution: str = "hourly"
    connection: Connection = default(default_factory=Connection)
    name: str = "open-meteo-archive"

    def fetch(self, site, now, start=None, end=None) -> pd.DataFrame:
        if start is None or end is None:
            raise ConfigError("the Open-Meteo archive needs a start and an end")
        place, resolution = site_place(site), _check_resolution(self.resolution)
        start, end = _utc(start), _utc(end)
        # start_date/end_date are whole GMT days, both included.
        params = {**_open_meteo_params(place, resolution), "start_date": start.strftime("%Y-%m-%d"),
                  "end_date": (end - pd.Timedelta("1us")).strftime("%Y-%m-%d")}
        with self.connection.client(OPEN_METEO_ARCHIVE) as client:
            payload = client.json("forecast", params)
        rows = open_meteo_rows(payload, place, self.name, resolution, None, start, end)
        return rows[rows[s.ISSUED_AT] < _utc(now)].reset_index(drop=True)


def forecast_solar_azimuth(compass_degrees: float) -> int:
    """Forecast.Solar's azimuth (-180..180, 0 = south, -90 = east, 90 = west) of a compass
    bearing (0 = north, 90 = east, 180 = south); integer, as the API takes it."""
    return int(round((compass_degrees % 360.0) - 180.0))


@dataclass(frozen=True)
class ForecastSolar:
    """Forecast.Solar's PV estimate for the site's declared plane: the public API without a
    key, ``/{key}/estimate/...`` with ``FORECAST_SOLAR_API_KEY``. Its answer carries no model
    run time (``message.info.time`` is the request's), so an issue is stamped with the fetch time."""

    connection: Connection = default(default_factory=Connection)
    name: str = "forecast-solar"

    def fetch(self, site, now, start=None, end=None) -> pd.DataFrame:
        place = site_place(site)
        if place.pv_kwp <= 0 or place.tilt_degrees is None or place.azimuth_degrees is None:
            raise ConfigError(f"site {place.device_id}: Forecast.Solar needs a PV plane (kWp, tilt, azimuth)")
        path = (f"estimate/{place.latitude:.4f}/{place.longitude:.4f}/{int(round(place.tilt_degrees))}/"
                f"{forecast_solar_azimuth(place.azimuth_degrees)}/{place.pv_kwp:g}")
        environ = self.connection.environ
        if environ.get(FORECAST_SOLAR.key_variable or "", "").strip():
            path = f"{FORECAST_SOLAR.key(environ)}/{path}"
        with self.connection.client(FORECAST_SOLAR) as client:
            payload = client.json(path, headers={"Accept": "application/json"})
        return forecast_solar_rows(payload, place, self.name, _utc(now), start, end)


def forecast_solar_rows(payload: Any, place: Place, source: str, issued_at: pd.Timestamp,
                        start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """Rows from a Forecast.Solar estimate. Keys are the end of each period in local time of
    ``message.info.timezone`` unless they carry an offset; the sun is down at every change of
    daylight saving time, so no key is ambiguous. ``pv_kw`` is the period's mean power
    (``watt_hours_period`` over the period's length; the first period's ``watts``), the
    readings' "interval ending at ts"; without ``watt_hours_period`` it is ``watts``."""
    name = FORECAST_SOLAR.name
    watts = field(payload, "result.watts", name)
    if not isinstance(watts, dict):
        raise MalformedResponse(f"{name}: field 'result.watts' is not an object of times and watts")
    keys = list(watts)
    if not keys:
        return _rows(place, source, issued_at, pd.DatetimeIndex([], tz="UTC"), {}, start, end)
    ts = _local_keys(keys, payload, name)
    order = np.argsort(ts.asi8, kind="stable")
    ts, keys = ts[order], [keys[i] for i in order]
    power_w = _numbers([watts[k] for k in keys], "result.watts", name, len(keys))
    energy = payload["result"].get("watt_hours_period")
    if isinstance(energy, dict) and all(k in energy for k in keys):
        wh = _numbers([energy[k] for k in keys], "result.watt_hours_period", name, len(keys))
        stamps = ts.tz_localize(None).to_numpy()
        hours = np.diff(stamps, prepend=stamps[:1]) / np.timedelta64(1, "h")
        with np.errstate(divide="ignore", invalid="ignore"):
            power_w = np.where(hours > 0, wh / hours, power_w)
    return _rows(place, source, issued_at, ts, {s.PV_POWER: power_w / 1000.0}, start, end)


def _local_keys(keys: list[str], payload: Any, name: str) -> pd.DatetimeIndex:
    try:
        stamps = [pd.Timestamp(k) for k in keys]
    except ValueError:
        raise MalformedResponse(f"{name}: field 'result.watts' has a key that is not a time") from None
    if all(t.tzinfo is not None for t in stamps):
        return pd.DatetimeIndex([t.tz_convert("UTC") for t in stamps]).astype("datetime64[us, UTC]")
    zone = field(payload, "message.info.timezone", name)
    try:
        local = pd.DatetimeIndex([t.tz_localize(None) if t.tzinfo else t for t in stamps])
        return local.tz_localize(zone, ambiguous="raise", nonexistent="raise").tz_convert("UTC").astype("datetime64[us, UTC]")
    except (KeyError, ValueError) as error:  # an unknown zone; a key that DST makes ambiguous or skips
        raise MalformedResponse(f"{name}: cannot place 'result.watts' keys in message.info.timezone "
                                f"{zone!r} ({type(error).__name__})") from None


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    return dd.parse_ts(value).as_unit("us")


def fetch_weather(store, site: Mapping[str, Any], source: WeatherSource, now: pd.Timestamp | None = None) -> int:
    """Store one issue of ``source`` for ``site`` (a ``store.sites()`` row) and return the
    rows stored. An issue of the same source stored within the current hour makes it ask
    nothing (0): the services change at most every 15 min (Forecast.Solar) or with each model
    run (hours), and Forecast.Solar bans clients that ask too often."""
    now = _utc(now if now is not None else dd.utc_now())
    place, hour = site_place(site), now.floor("h")
    # A live issue covers the hour it was made in, so one from this hour has targets from `hour` on.
    stored = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: place.device_id, s.SOURCE: source.name},
                              start=hour)
    if ((stored[s.ISSUED_AT] >= hour) & (stored[s.ISSUED_AT] <= now)).any():
        return 0
    rows = source.fetch(site, now, start=hour)
    return store.upsert_frame(s.WEATHER_FORECASTS, rows) if len(rows) else 0


def backfill_weather(store, site: Mapping[str, Any], archive: WeatherSource, start: pd.Timestamp, end: pd.Timestamp,
                     now: pd.Timestamp | None = None) -> int:
    """Store the archive's values for ``[start, end)`` and return the rows stored; GMT days
    already stored are not asked for again (one request spans the first to the last missing day)."""
    now = _utc(now if now is not None else dd.utc_now())
    start, end = _utc(start), min(_utc(end), now)
    if start >= end:
        return 0
    place = site_place(site)
    stored = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: place.device_id, s.SOURCE: archive.name},
                              start=start, stop=end)
    days = pd.date_range(start.floor("D"), end - pd.Timedelta("1us"), freq="D")
    missing = days.difference(pd.DatetimeIndex(stored[dd.TS]).floor("D")) if len(stored) else days
    if missing.empty:
        return 0
    rows = archive.fetch(site, now, start=max(start, missing[0]), end=min(end, missing[-1] + pd.Timedelta(days=1)))
    return store.upsert_frame(s.WEATHER_FORECASTS, rows) if len(rows) else 0


def clear_sky_index(place: Place, ts: pd.DatetimeIndex, ghi_w_m2: np.ndarray) -> np.ndarray:
    """GHI over the clear-sky GHI of the place at each instant: the climatological clear sky a
    declared site's PV forecast multiplies the index back onto
    (``cloud.optimization.pv_forecast.clear_sky_output``), within ``[0, MAX_RATIO]`` and 0 with
    the sun down (clear-sky GHI below :data:`NIGHT_GHI_W_M2`); NaN where GHI is."""
    if len(ts) == 0:
        return np.empty(0)
    system = SolarConfig(latitude=place.latitude, longitude=place.longitude, altitude_m=place.altitude_m,
                         capacity_kw=0.0)
    codes, unique = pd.factorize(pd.DatetimeIndex(ts), sort=True)  # each distinct instant's clear sky once
    clear = clear_sky_output(system, pd.DatetimeIndex(unique)).clear_sky_ghi_w_m2[codes]
    ghi_w_m2 = np.asarray(ghi_w_m2, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.where(clear < NIGHT_GHI_W_M2, 0.0, np.clip(ghi_w_m2 / clear, 0.0, MAX_RATIO))
    return np.where(np.isnan(ghi_w_m2), np.nan, index)


class StoredWeatherForecast:
    """The forecasters' :class:`~cloud.forecasting.weather.WeatherForecast` over the stored
    issues of one source (a name or a :class:`WeatherSource`).

    Each pair ``(issued_at[i], target_ts[i])`` gets the values of the newest issue for that
    target made strictly before ``issued_at[i]``: a forecast made at ``t`` sees only what was
    stored as known before ``t``. Temperature is the issue's air temperature, the clear-sky
    index its GHI over the site's clear sky (:func:`clear_sky_index`); NaN where no issue
    qualifies. The site's place is its stored row when the store has one (the forecasters
    may pass only an id and coordinates), else the mapping given."""

    def __init__(self, store, source: str | WeatherSource):
        self.store = store
        self.source = source if isinstance(source, str) else source.name

    def forecast(self, site, issued_at, target_ts) -> pd.DataFrame:
        targets = pd.DatetimeIndex(target_ts).tz_convert("UTC").astype("datetime64[us, UTC]")
        issues = pd.DatetimeIndex(issued_at).tz_convert("UTC").astype("datetime64[us, UTC]")
        out = pd.DataFrame({c: np.full(len(targets), np.nan) for c in WEATHER_COLUMNS})
        if len(targets) == 0:
            return out
        place = self._place(site)
        stored = self.store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: place.device_id, s.SOURCE: self.source},
                                       start=targets.min(), stop=targets.max() + pd.Timedelta("1us"))
        if stored.empty:
            return out
        offers_of = dict(list(stored.sort_values([dd.TS, s.ISSUED_AT], kind="stable").groupby(dd.TS, sort=False)))
        wanted = pd.DataFrame({"row": np.arange(len(targets)), dd.TS: targets, s.ISSUED_AT: issues})
        temp, ghi = np.full(len(targets), np.nan), np.full(len(targets), np.nan)
        for target, group in wanted.groupby(dd.TS, sort=False):
            offers = offers_of.get(target)
            if offers is None:
                continue
            known = offers[s.ISSUED_AT].to_numpy()
            pos = np.searchsorted(known, group[s.ISSUED_AT].to_numpy(), side="left") - 1  # strictly before
            ok, rows = pos >= 0, group["row"].to_numpy()
            temp[rows[ok]] = offers[s.TEMP_AIR].to_numpy(dtype="float64")[pos[ok]]
            ghi[rows[ok]] = offers[s.GHI].to_numpy(dtype="float64")[pos[ok]]
        out[TEMP] = temp
        known, index = np.isfinite(ghi), np.full(len(targets), np.nan)
        index[known] = clear_sky_index(place, targets[known], ghi[known])
        out[CLEAR_SKY_INDEX] = index
        return out

    def _place(self, site: Mapping[str, Any]) -> Place:
        device_id = str(site.get(dd.DEVICE_ID))
        row = next((r for r in self.store.sites() if str(r.get(dd.DEVICE_ID)) == device_id), None)
        return site_place(row if row is not None else site)
