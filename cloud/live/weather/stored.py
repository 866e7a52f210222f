"""Weather issues stored and read back: one live issue per site and hour, backfills of the
days a site lacks, and the forecasters' view of what was issued before each forecast."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cloud.feature_engineering.physics import solar_config
from cloud.forecasting.clear_sky_index import NIGHT_SHARE, index_by_day, sun_up
from cloud.forecasting.weather import CLEAR_SKY_INDEX, TEMP, WEATHER_COLUMNS
from cloud.live.http import NoData
from cloud.live.weather.open_meteo import OpenMeteoPreviousRuns
from cloud.live.weather.sources import Place, WeatherSource, as_utc, site_place
from cloud.store import schema as s
from der_core import der_data as dd
from der_core.config import SolarConfig
from der_physics.solar import clear_sky_output

#: The irradiance (W/m2) a PV rating refers to.
RATED_GHI_W_M2 = 1000.0
#: Clear-sky GHI (W/m2) below which the sun counts as down: the ``NIGHT_SHARE`` of the rated
#: irradiance, as the measured clear-sky ratio uses it (index 0, not a division by almost
#: nothing at dawn and dusk).
NIGHT_GHI_W_M2 = NIGHT_SHARE * RATED_GHI_W_M2


def fetch_weather(store, site: Mapping[str, Any], source: WeatherSource, now: pd.Timestamp | None = None) -> int:
    """Store one issue of ``source`` for ``site`` (a ``store.sites()`` row) and return the
    rows stored. An issue of the same source stored within the current hour makes it ask
    nothing (0): the services change at most every 15 min (Forecast.Solar) or with each model
    run (hours), and Forecast.Solar bans clients that ask too often. An answer with no value
    from this hour on raises NoData."""
    now = as_utc(now if now is not None else dd.utc_now())
    place, hour = site_place(site), now.floor("h")
    # A live issue covers the hour it was made in, so one from this hour has targets from `hour` on.
    stored = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: place.device_id, s.SOURCE: source.name},
                              start=hour)
    if ((stored[s.ISSUED_AT] >= hour) & (stored[s.ISSUED_AT] <= now)).any():
        return 0
    rows = source.fetch(site, now, start=hour)
    if rows.empty:  # every value null or unphysical: storing nothing unsaid would plan on an old issue as if new
        raise NoData(f"{source.name}: the answer holds no value from {dd.format_ts(hour)} on; "
                     "expected the forecast of the hours ahead")
    return store.upsert_frame(s.WEATHER_FORECASTS, rows)


def backfill_weather(store, site: Mapping[str, Any], archive: WeatherSource, start: pd.Timestamp, end: pd.Timestamp,
                     now: pd.Timestamp | None = None) -> int:
    """Store the archive's values for ``[start, end)`` and return the rows stored; GMT days
    holding a row of the archive are not asked for again (:func:`missing_spans`)."""
    return _backfill(store, site, archive, start, end, now, lambda rows: np.ones(len(rows), dtype=bool))


def backfill_previous_runs(store, site: Mapping[str, Any], start: pd.Timestamp, end: pd.Timestamp,
                           source: OpenMeteoPreviousRuns | None = None, now: pd.Timestamp | None = None) -> int:
    """Store Open-Meteo's forecasts of ``[start, end)`` made ``source.lead_days`` before
    (:class:`OpenMeteoPreviousRuns`, one day ahead by default) and return the rows stored. A
    GMT day holding a row of that lead (issued exactly the lead before its instant) is not asked
    for again; the live issues stored under the same name do not count, since they were made
    at other leads."""
    source = source or OpenMeteoPreviousRuns()
    return _backfill(store, site, source, start, end, now, lambda rows: rows[s.ISSUED_AT] == rows[dd.TS] - source.lead)


def missing_spans(stored_days: pd.DatetimeIndex, start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The parts of ``[start, end)`` on GMT days not in ``stored_days`` (midnights), each run
    of consecutive missing days one span: one request per span, nothing stored asked again."""
    days = pd.date_range(start.floor("D"), end - pd.Timedelta("1us"), freq="D")
    missing = days.difference(stored_days)
    if missing.empty:
        return []
    breaks = np.flatnonzero(np.asarray(missing[1:] - missing[:-1]) != pd.Timedelta(days=1)) + 1
    runs = np.split(np.arange(len(missing)), breaks)
    return [(max(start, missing[r[0]]), min(end, missing[r[-1]] + pd.Timedelta(days=1))) for r in runs]


def _backfill(store, site: Mapping[str, Any], source: WeatherSource, start: pd.Timestamp, end: pd.Timestamp,
              now: pd.Timestamp | None, ours: Callable[[pd.DataFrame], Any]) -> int:
    """Fetch and store ``source`` over the spans of ``[start, min(end, now))`` whose GMT days
    hold no stored row that ``ours`` selects."""
    now = as_utc(now if now is not None else dd.utc_now())
    start, end = as_utc(start), min(as_utc(end), now)
    if start >= end:
        return 0
    place = site_place(site)
    stored = store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: place.device_id, s.SOURCE: source.name},
                              start=start, stop=end)
    stored_days = pd.DatetimeIndex(stored[dd.TS][np.asarray(ours(stored), dtype=bool)]).floor("D") if len(stored) else \
        pd.DatetimeIndex([], tz="UTC")
    written = 0
    for span_start, span_end in missing_spans(stored_days, start, end):
        rows = source.fetch(site, now, start=span_start, end=span_end)
        written += store.upsert_frame(s.WEATHER_FORECASTS, rows) if len(rows) else 0
    return written


def clear_sky_index(place: Place, ts: pd.DatetimeIndex, ghi_w_m2: np.ndarray) -> np.ndarray:
    """GHI over the clear-sky GHI of the place at each instant: the clear sky a declared site's
    PV forecast multiplies the index back onto (``der_physics.solar.clear_sky_output``), within
    ``[0, MAX_RATIO]`` and 0 with the sun down (``index_by_day``, the sun down where the
    clear-sky GHI is below :data:`NIGHT_GHI_W_M2`); NaN where GHI is."""
    if len(ts) == 0:
        return np.empty(0)
    system = SolarConfig(latitude=place.latitude, longitude=place.longitude, altitude_m=place.altitude_m,
                         capacity_kw=0.0)
    clear = _clear_sky(system, ts, "clear_sky_ghi_w_m2")
    ghi_w_m2 = np.asarray(ghi_w_m2, dtype="float64")
    return np.where(np.isnan(ghi_w_m2), np.nan, index_by_day(ghi_w_m2, clear, sun_up(clear, RATED_GHI_W_M2)))


def pv_clear_sky_index(system: SolarConfig, ts: pd.DatetimeIndex, pv_kw: np.ndarray) -> np.ndarray:
    """A PV-forecast service's power over the declared array's clear-sky output at each
    instant (``clear_sky_output``, the output the site's PV forecast multiplies the index back
    onto), within ``[0, MAX_RATIO]`` and 0 with the sun down (``index_by_day``, the sun down
    where the clear-sky output is below ``NIGHT_SHARE`` of the inverter's limit). Services
    such as Forecast.Solar forecast power, not irradiance; their ratio to clear sky is the
    index the forecasters take."""
    clear = _clear_sky(system, ts, "generation_kw")
    return index_by_day(pv_kw, clear, sun_up(clear, system.inverter_limit_kw))


def _clear_sky(system: SolarConfig, ts: pd.DatetimeIndex, quantity: str) -> np.ndarray:
    """One ``quantity`` of the system's clear-sky output at ``ts``, each distinct instant
    computed once."""
    codes, unique = pd.factorize(pd.DatetimeIndex(ts), sort=True)
    return np.asarray(getattr(clear_sky_output(system, pd.DatetimeIndex(unique)), quantity))[codes]


class StoredWeatherForecast:
    """The forecasters' :class:`~cloud.forecasting.weather.WeatherForecast` over the stored
    issues of one source (a name or a :class:`WeatherSource`).

    Each pair ``(issued_at[i], target_ts[i])`` gets the values of the newest issue for that
    target made strictly before ``issued_at[i]``: a forecast made at ``t`` sees only what was
    stored as known before ``t``. Temperature is the issue's air temperature, the clear-sky
    index its GHI over the site's clear sky (:func:`clear_sky_index`), or for a PV-forecast
    service its power over the declared array's (:func:`pv_clear_sky_index`); NaN where no issue
    qualifies. A target with no row of its own inside an hour that has one (a quarter-hour
    plan over hourly issues) takes the hour's values: the hour's mean irradiance and its
    clear-sky index hold for each quarter of it. The site's place is its stored row when the store has one (the forecasters
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
        place, hours = self._place(site), targets.ceil("h")
        stored = self.store.read_frame(s.WEATHER_FORECASTS, {dd.DEVICE_ID: place.device_id, s.SOURCE: self.source},
                                       start=targets.min(), stop=hours.max() + pd.Timedelta("1us"))
        if stored.empty:
            return out
        offers_of = dict(list(stored.sort_values([dd.TS, s.ISSUED_AT], kind="stable").groupby(dd.TS, sort=False)))
        temp, ghi, pv = _newest_before(offers_of, targets, issues)
        # An hourly issue (previous runs, an hourly live resolution) describes the hour ending at
        # its ts: a target inside that hour with no row of its own reads the hour's values.
        inside = np.isnan(temp) & np.isnan(ghi) & np.isnan(pv) & np.asarray(hours != targets)
        if inside.any():
            temp[inside], ghi[inside], pv[inside] = _newest_before(offers_of, hours[inside], issues[inside])
        out[TEMP] = temp
        at = targets.where(~inside, hours)
        known, index = np.isfinite(ghi), np.full(len(targets), np.nan)
        index[known] = clear_sky_index(place, at[known], ghi[known])
        from_pv = ~known & np.isfinite(pv)
        if from_pv.any():
            index[from_pv] = pv_clear_sky_index(self._system(site), at[from_pv], pv[from_pv])
        out[CLEAR_SKY_INDEX] = index
        return out

    def _system(self, site: Mapping[str, Any]) -> SolarConfig:
        return solar_config(self._row(site) or site)

    def _row(self, site: Mapping[str, Any]) -> Mapping[str, Any] | None:
        device_id = str(site.get(dd.DEVICE_ID))
        return next((r for r in self.store.sites() if str(r.get(dd.DEVICE_ID)) == device_id), None)

    def _place(self, site: Mapping[str, Any]) -> Place:
        row = self._row(site)
        return site_place(row if row is not None else site)


def _newest_before(offers_of: Mapping[pd.Timestamp, pd.DataFrame], targets: pd.DatetimeIndex,
                   issues: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Air temperature, GHI and PV power of the newest stored issue of each target made
    strictly before its issue time (``offers_of``: the stored rows per target, by issue time);
    NaN where none is."""
    wanted = pd.DataFrame({"row": np.arange(len(targets)), dd.TS: targets, s.ISSUED_AT: issues})
    temp, ghi, pv = (np.full(len(targets), np.nan) for _ in range(3))
    for target, group in wanted.groupby(dd.TS, sort=False):
        offers = offers_of.get(target)
        if offers is None:
            continue
        known = offers[s.ISSUED_AT].to_numpy()
        pos = np.searchsorted(known, group[s.ISSUED_AT].to_numpy(), side="left") - 1  # strictly before
        ok, rows = pos >= 0, group["row"].to_numpy()
        temp[rows[ok]] = offers[s.TEMP_AIR].to_numpy(dtype="float64")[pos[ok]]
        ghi[rows[ok]] = offers[s.GHI].to_numpy(dtype="float64")[pos[ok]]
        pv[rows[ok]] = offers[s.PV_POWER].to_numpy(dtype="float64")[pos[ok]]
    return temp, ghi, pv
