"""The weather-forecast input of the forecasters, behind one small interface.

A forecaster may only see the weather forecast that was available at the issue time, never
the weather that happened. :class:`SimulatedWeatherForecast` gives simulated sites the
simulator's own day-ahead forecast (``der_physics.weather.forecast``: the actual
weather seen through an error that grows with lead time); :class:`CsvWeatherForecast` reads
forecasts a weather service delivered, for real deployments. Sites neither knows get NaN,
which the models treat as "no weather forecast".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.config import build_config, reads_device
from der_core.errors import ConfigError, DERError
from der_physics import weather
from der_physics.base import TimeAxis

TEMP, CLEAR_SKY_INDEX = "temp_air_celsius", "clear_sky_index"
WEATHER_COLUMNS: tuple[str, ...] = (TEMP, CLEAR_SKY_INDEX)


class WeatherForecast(Protocol):
    def forecast(self, site: Mapping[str, Any], issued_at: pd.DatetimeIndex, target_ts: pd.DatetimeIndex) -> pd.DataFrame:
        """Forecast temperature and clear-sky index for each ``target_ts[i]`` as known at
        ``issued_at[i]``: a frame with :data:`WEATHER_COLUMNS`, one row per pair."""
        ...


def _missing(n: int) -> pd.DataFrame:
    return pd.DataFrame({c: np.full(n, np.nan) for c in WEATHER_COLUMNS})


class NoWeatherForecast:
    """No weather service: the models fall back on history and physics alone."""

    def forecast(self, site, issued_at, target_ts) -> pd.DataFrame:
        return _missing(len(target_ts))


class SimulatedWeatherForecast:
    """The simulator's day-ahead forecast for sites whose ``config_json`` holds a simulator
    configuration (every simulated site's row does); NaN for any other site."""

    def forecast(self, site, issued_at, target_ts) -> pd.DataFrame:
        seed = _simulator_seed(site)
        if seed is None or len(target_ts) == 0:
            return _missing(len(target_ts))
        targets = pd.DatetimeIndex(target_ts)
        codes, unique = pd.factorize(targets, sort=True)
        axis = TimeAxis.from_times(unique)
        actual = weather.simulate(seed, float(site["latitude"]), float(site["longitude"]), axis.epoch_s, axis.day_of_year)
        lead_h = ((targets - pd.DatetimeIndex(issued_at)) / pd.Timedelta(hours=1)).to_numpy(dtype="float64")
        inverse = codes
        rows = weather.Weather(*(np.asarray(getattr(actual, f))[inverse] for f in weather.Weather.__dataclass_fields__))
        seen = weather.forecast(rows, seed, axis.epoch_s[inverse], lead_h)
        return pd.DataFrame({TEMP: seen.temp_air_celsius, CLEAR_SKY_INDEX: seen.clear_sky_index})


def _simulator_seed(site: Mapping[str, Any]) -> int | None:
    """The seed of a simulated site's weather; None for any other (a declaration, an
    imported description, a gateway reading a real device)."""
    text = site.get("config_json")
    if not text or not isinstance(text, str) or reads_device(text):
        return None
    try:
        return build_config(json.loads(text)).effective_seed
    except (ValueError, DERError):  # an imported site's free-form description
        return None


class CsvWeatherForecast:
    """Forecasts from a CSV file with columns ``issued_at``, ``target_ts``,
    ``temp_air_celsius``, ``clear_sky_index`` and optionally ``device_id`` (rows without one
    apply to every site). Each target gets the newest forecast issued at or before the issue
    time, so a forecast published later is never used."""

    def __init__(self, path: str | Path):
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as error:
            raise ConfigError(f"weather forecast file {path}: cannot read it ({error})") from None
        missing = [c for c in ("issued_at", "target_ts", *WEATHER_COLUMNS) if c not in table.columns]
        if missing:
            raise ConfigError(f"weather forecast file {path}: missing columns {missing}")
        for column in ("issued_at", "target_ts"):
            table[column] = _instants(table[column], f"weather forecast file {path}: {column}")
        for column in WEATHER_COLUMNS:
            table[column] = _numbers(table[column], f"weather forecast file {path}: {column}")
        if dd.DEVICE_ID not in table.columns:
            table[dd.DEVICE_ID] = ""
        self._table = table.fillna({dd.DEVICE_ID: ""}).astype({dd.DEVICE_ID: str})

    def device_ids(self) -> set[str]:
        """The sites the file names (rows without a ``device_id`` serve every site)."""
        return set(self._table[dd.DEVICE_ID]) - {""}

    def forecast(self, site, issued_at, target_ts) -> pd.DataFrame:
        known = self._table[self._table[dd.DEVICE_ID].isin(["", str(site.get(dd.DEVICE_ID))])]
        wanted = pd.DataFrame({"row": np.arange(len(target_ts)), "target_ts": pd.DatetimeIndex(target_ts),
                               "issued_at": pd.DatetimeIndex(issued_at)})
        out = _missing(len(target_ts))
        if known.empty or wanted.empty:
            return out
        for target, group in wanted.groupby("target_ts", sort=False):
            offers = known[known["target_ts"] == target].sort_values("issued_at")
            if offers.empty:
                continue
            pos = np.searchsorted(offers["issued_at"].to_numpy(), group["issued_at"].to_numpy(), side="right") - 1
            ok = pos >= 0
            for column in WEATHER_COLUMNS:
                out.loc[group["row"].to_numpy()[ok], column] = offers[column].to_numpy()[pos[ok]]
        return out


#: An ISO 8601 instant that names its offset: ``Z``, ``+01:00`` or ``-0600`` at the end.
_WITH_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"


def _instants(values: pd.Series, what: str) -> pd.Series:
    """``values`` as UTC instants; a time without an offset (a service's local wall clock would
    be read as UTC, hours off) or one that is no time is refused, naming its row (the file's
    line is the row plus 2)."""
    text = values.astype(str).str.strip()
    bad = ~text.str.contains(_WITH_OFFSET, regex=True)
    parsed = pd.to_datetime(text.where(~bad), utc=True, errors="coerce", format="ISO8601")
    bad |= parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConfigError(f"{what} {text.iloc[row]!r} on line {row + 2}: expected an ISO 8601 time with its offset, "
                          "e.g. 2024-04-10T00:00Z or 2024-04-10T02:00+02:00")
    return parsed


def _numbers(values: pd.Series, what: str) -> pd.Series:
    """``values`` as finite numbers, blanks left missing (no forecast for that row); text or an
    infinity is refused, naming its row, so it never reaches a model as a feature."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = (numbers.isna() & values.notna()) | np.isinf(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConfigError(f"{what} '{values.iloc[row]}' on line {row + 2}: expected a finite number")
    return numbers
