"""Open-Meteo's forecast API, its historical-forecast archive and its previous model runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

import pandas as pd

from cloud.live.http import MalformedResponse, Service, field
from cloud.live.weather.sources import Connection, Place, as_utc, float_array, site_place, table_rows
from cloud.store import schema as s
from der_core import der_data as dd
from der_core.errors import ConfigError

OPEN_METEO = Service("Open-Meteo", "OPEN_METEO", "https://api.open-meteo.com/v1")
OPEN_METEO_ARCHIVE = Service("Open-Meteo archive", "OPEN_METEO_ARCHIVE", "https://historical-forecast-api.open-meteo.com/v1")
OPEN_METEO_PREVIOUS_RUNS = Service("Open-Meteo previous runs", "OPEN_METEO_PREVIOUS_RUNS",
                                   "https://previous-runs-api.open-meteo.com/v1")
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


def open_meteo_rows(payload: Any, place: Place, source: str, resolution: str,
                    issued_at: pd.Timestamp | None, start: pd.Timestamp | None = None,
                    end: pd.Timestamp | None = None, suffix: str = "") -> pd.DataFrame:
    """Rows from an Open-Meteo body (forecast, archive or previous runs): times in ``unixtime``
    or ISO 8601 local to ``utc_offset_seconds`` (0 with ``timezone=GMT``), so every ``ts`` is a
    UTC instant. ``issued_at`` None stamps each row with its own ``ts`` (the archive's rule).
    ``suffix`` is what the service appends to each variable's name (``_previous_day1``)."""
    name = OPEN_METEO.name
    times = field(payload, f"{resolution}.time", name)
    if not isinstance(times, list):
        raise MalformedResponse(f"{name}: field '{resolution}.time' is not a list (expected as the service documents it)")
    if any(t is None for t in times):  # read among numbers, a null turns them all into nanoseconds of 1970
        raise MalformedResponse(f"{name}: field '{resolution}.time' holds a null; expected a time for every step")
    units = payload.get(f"{resolution}_units") or {}
    for variable, unit in {v + suffix: u for v, u in OPEN_METEO_UNITS.items()}.items():
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
    paths = {ours: f"{resolution}.{theirs}{suffix}" for theirs, ours in OPEN_METEO_VARIABLES.items()}
    values = {ours: float_array(field(payload, path, name), path, name, len(ts)) for ours, path in paths.items()}
    return table_rows(place, source, ts if issued_at is None else issued_at, ts, values, start, end)


def _check_resolution(resolution: str) -> str:
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"Open-Meteo resolution {resolution!r}: expected one of {', '.join(RESOLUTIONS)}")
    return resolution


def _open_meteo_params(place: Place, resolution: str, suffix: str = "") -> dict[str, Any]:
    return {"latitude": round(place.latitude, 4), "longitude": round(place.longitude, 4),
            resolution: ",".join(v + suffix for v in OPEN_METEO_VARIABLES), "timezone": "GMT",
            "timeformat": "unixtime", "wind_speed_unit": "ms"}


def _days(service: str, start: pd.Timestamp | None, end: pd.Timestamp | None) -> dict[str, str]:
    """``start_date``/``end_date`` of ``[start, end)``: whole GMT days, both included."""
    if start is None or end is None:
        raise ConfigError(f"the {service} needs a start and an end")
    start, end = as_utc(start), as_utc(end)
    return {"start_date": start.strftime("%Y-%m-%d"), "end_date": (end - pd.Timedelta("1us")).strftime("%Y-%m-%d")}


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
        return open_meteo_rows(payload, place, self.name, resolution, as_utc(now), start, end)


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
    of a nowcast. A day-ahead backtest needs forecasts as issued (:class:`OpenMeteoPreviousRuns`),
    not this archive.
    """

    resolution: str = "hourly"
    connection: Connection = default(default_factory=Connection)
    name: str = "open-meteo-archive"

    def fetch(self, site, now, start=None, end=None) -> pd.DataFrame:
        place, resolution = site_place(site), _check_resolution(self.resolution)
        params = {**_open_meteo_params(place, resolution), **_days(OPEN_METEO_ARCHIVE.name, start, end)}
        start, end = as_utc(start), as_utc(end)
        with self.connection.client(OPEN_METEO_ARCHIVE) as client:
            payload = client.json("forecast", params)
        rows = open_meteo_rows(payload, place, self.name, resolution, None, start, end)
        return rows[rows[s.ISSUED_AT] < as_utc(now)].reset_index(drop=True)



#: The first day the Previous Model Runs API holds (its documentation: data from January 2024).
PREVIOUS_RUNS_START = pd.Timestamp("2024-01-01", tz="UTC")


@dataclass(frozen=True)
class OpenMeteoPreviousRuns:
    """What Open-Meteo's model forecast ``lead_days`` days before each hour: its Previous Model
    Runs API (open-meteo.com/en/docs/previous-runs-api), hourly variables suffixed
    ``_previous_day{N}`` ("the value that was predicted 24 hours before valid time" for N = 1),
    archived from January 2024. These are the forecasts a day-ahead backtest needs, so the rows
    are stored under the live adapter's source name (``open-meteo``): a site that declares
    ``"weather": "open-meteo"`` reads them beside its live issues.

    Issue rule: the value for hour ``t`` is stored as issued at ``t − N days`` (UTC, exactly
    N × 24 h). It came from a run made about N × 24 h before ``t``; ``t − N days`` is the
    latest that run can have been made, so a forecast at ``d`` reads it only where
    ``t < d + N days`` and never sees it earlier than the service says it existed. Values
    issued at or after ``now`` are dropped, as an archive keeps only what was known.
    """

    lead_days: int = 1
    connection: Connection = default(default_factory=Connection)
    name: str = "open-meteo"

    def __post_init__(self) -> None:
        if not 1 <= self.lead_days <= 7:
            raise ConfigError(f"previous-runs lead {self.lead_days} days: expected 1 to 7 (the API's _previous_day1 to 7)")

    @property
    def lead(self) -> pd.Timedelta:
        return pd.Timedelta(days=self.lead_days)

    def fetch(self, site, now, start=None, end=None) -> pd.DataFrame:
        place, suffix = site_place(site), f"_previous_day{self.lead_days}"
        params = {**_open_meteo_params(place, "hourly", suffix), **_days(OPEN_METEO_PREVIOUS_RUNS.name, start, end)}
        start, end = as_utc(start), as_utc(end)
        with self.connection.client(OPEN_METEO_PREVIOUS_RUNS) as client:
            payload = client.json("forecast", params)
        rows = open_meteo_rows(payload, place, self.name, "hourly", None, start, end, suffix)
        rows[s.ISSUED_AT] = rows[dd.TS] - self.lead
        return rows[rows[s.ISSUED_AT] < as_utc(now)].reset_index(drop=True)
