"""Forecast.Solar's PV estimate for a site's declared plane."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

import numpy as np
import pandas as pd

from cloud.live.http import MalformedResponse, Service, field
from cloud.live.weather.sources import Connection, Place, as_utc, float_array, site_place, table_rows
from cloud.store import schema as s
from der_core.errors import ConfigError

FORECAST_SOLAR = Service("Forecast.Solar", "FORECAST_SOLAR", "https://api.forecast.solar",
                         key_variable="FORECAST_SOLAR_API_KEY")


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
        return forecast_solar_rows(payload, place, self.name, as_utc(now), start, end)


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
        return table_rows(place, source, issued_at, pd.DatetimeIndex([], tz="UTC"), {}, start, end)
    ts = _local_keys(keys, payload, name)
    order = np.argsort(ts.asi8, kind="stable")
    ts, keys = ts[order], [keys[i] for i in order]
    power_w = float_array([watts[k] for k in keys], "result.watts", name, len(keys))
    energy = payload["result"].get("watt_hours_period")
    if isinstance(energy, dict) and all(k in energy for k in keys):
        wh = float_array([energy[k] for k in keys], "result.watt_hours_period", name, len(keys))
        stamps = ts.tz_localize(None).to_numpy()
        hours = np.diff(stamps, prepend=stamps[:1]) / np.timedelta64(1, "h")
        with np.errstate(divide="ignore", invalid="ignore"):
            power_w = np.where(hours > 0, wh / hours, power_w)
    return table_rows(place, source, issued_at, ts, {s.PV_POWER: power_w / 1000.0}, start, end)


def _local_keys(keys: list[str], payload: Any, name: str) -> pd.DatetimeIndex:
    try:
        stamps = [pd.Timestamp(k) for k in keys]
    except ValueError:
        raise MalformedResponse(f"{name}: field 'result.watts' has a key that is not a time") from None
    if all(t.tzinfo is not None for t in stamps):
        return pd.DatetimeIndex([t.tz_convert("UTC") for t in stamps]).astype("datetime64[us, UTC]")
    zone = field(payload, "message.info.timezone", name)
    if not isinstance(zone, str):  # pandas would read a number as an offset in seconds
        raise MalformedResponse(f"{name}: message.info.timezone is {zone!r}; expected a time zone name such as "
                                "'Europe/Berlin'")
    try:
        local = pd.DatetimeIndex([t.tz_localize(None) if t.tzinfo else t for t in stamps])
        return local.tz_localize(zone, ambiguous="raise", nonexistent="raise").tz_convert("UTC").astype("datetime64[us, UTC]")
    except (KeyError, ValueError) as error:  # an unknown zone; a key that DST makes ambiguous or skips
        raise MalformedResponse(f"{name}: cannot place 'result.watts' keys in message.info.timezone "
                                f"{zone!r} ({type(error).__name__})") from None

