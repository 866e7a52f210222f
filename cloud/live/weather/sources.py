"""What every weather adapter shares: where a site is (:class:`Place`), the
:class:`WeatherSource` protocol, how an adapter reaches its service (:class:`Connection`) and
the rows of ``weather_forecasts`` it returns (:func:`table_rows`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any, Protocol

import numpy as np
import pandas as pd

from cloud.live.http import HttpClient, MalformedResponse, RetryPolicy, Service
from cloud.store import schema as s
from der_core import der_data as dd
from der_core.errors import ConfigError
from der_core.site_file import declared_site

log = logging.getLogger(__name__)


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


#: What the weather can be, per field (W/m², °C, %, m/s, kW): irradiance at most ~10 % above
#: the solar constant, the air within its recorded extremes, the strongest gust measured. A
#: value outside is no reading of the weather (a service's fill value, a unit mixed up) and is
#: stored as missing, so no forecast is driven by it.
PHYSICAL: Mapping[str, tuple[float, float]] = {
    s.GHI: (0.0, 1500.0), s.DNI: (0.0, 1500.0), s.DHI: (0.0, 1500.0), s.TEMP_AIR: (-90.0, 60.0),
    s.CLOUD_COVER: (0.0, 100.0), s.WIND_SPEED: (0.0, 120.0), s.PV_POWER: (0.0, 1e6),
}


def physical(values: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """``values`` with each number outside :data:`PHYSICAL` made missing, said in one warning."""
    kept, dropped = {}, []
    for name, array in values.items():
        low, high = PHYSICAL.get(name, (-np.inf, np.inf))
        wrong = ~np.isnan(array) & ((array < low) | (array > high))
        kept[name] = np.where(wrong, np.nan, array)
        if wrong.any():
            dropped.append(f"{int(wrong.sum())} {name} (e.g. {array[wrong][0]:g}; expected {low:g} to {high:g})")
    if dropped:
        log.warning("%s: values outside what the weather can be, stored as missing: %s", source, ", ".join(dropped))
    return kept


def table_rows(place: Place, source: str, issued_at: pd.Timestamp | pd.DatetimeIndex, ts: pd.DatetimeIndex,
          values: Mapping[str, np.ndarray], start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """The table's rows for ``ts`` within ``[start, end)``; a target the service left empty
    (beyond its horizon: all values null) is no row, nor is one whose values are all outside
    :data:`PHYSICAL`."""
    values = physical(values, source)
    frame = pd.DataFrame({dd.DEVICE_ID: place.device_id, s.SOURCE: source, s.ISSUED_AT: issued_at, dd.TS: ts,
                          **{c: values.get(c, np.full(len(ts), np.nan)) for c in s.WEATHER_FIELDS}})
    keep = frame[list(s.WEATHER_FIELDS)].notna().any(axis=1)
    if start is not None:
        keep &= frame[dd.TS] >= start
    if end is not None:
        keep &= frame[dd.TS] < end
    return frame[keep].reset_index(drop=True)


def float_array(values: Any, path: str, service: str, length: int) -> np.ndarray:
    """``values`` (the body's field ``path``) as floats, JSON null as NaN; one line otherwise."""
    try:
        array = np.asarray(values, dtype="float64")  # JSON null -> NaN
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (length,):
        raise MalformedResponse(f"{service}: field {path!r} is not a list of {length} numbers "
                                "(expected as the service documents it)")
    return array



def as_utc(value: pd.Timestamp | str) -> pd.Timestamp:
    return dd.parse_ts(value).as_unit("us")

