"""What a site's forecasts and plans read from outside services, decided once per site.

A declared site (``der_core.site_file``) may name a weather service (``weather``) and a price
source (``prices``). :func:`site_inputs` turns its stored row into :class:`SiteInputs`, which
the planner, the recorded backtest and the forecasting job all read:

* :meth:`SiteInputs.weather_forecast`: the stored issues of its weather service
  (:class:`~cloud.live.weather.StoredWeatherForecast`), else the recorded forecasts of
  ``FORECAST_WEATHER_CSV`` (None without it: the PV forecast persists yesterday's sky);
* :meth:`SiteInputs.wholesale`: the price a dynamic tariff multiplies, as known at an
  instant: the stored publications, past them the price forecast
  (:func:`~cloud.live.prices.price_forecast`), past that the mean of the known ones (0, the
  tariff's fixed part, when none is known);
* :meth:`SiteInputs.prices_in_force`: what a bill is made of, the latest publication of each interval;
* :meth:`SiteInputs.refresh`: fetch the weather and today's and tomorrow's prices. A service
  that gives no usable answer (``SourceError``) stops nothing: the failure is logged as one
  warning line naming the source, and :attr:`SiteInputs.stale` says since when the data
  planned on is the newest the store has, which the plan's summary carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cloud.forecasting.settings import settings_from
from cloud.forecasting.weather import WeatherForecast
from cloud.live.http import NoData, SourceError, SourceUnavailable
from cloud.live.prices import PriceSource, fetch_prices, knows_present, price_forecast, price_source, published_prices
from cloud.live.weather import Connection, ForecastSolar, OpenMeteo, StoredWeatherForecast, WeatherSource, fetch_weather
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.errors import ConfigError
from der_core.site_file import SiteDeclaration, WeatherChoice, declared_site, planning_config

log = logging.getLogger(__name__)
#: The instant a bill reads prices at: after every publication, so each interval's latest counts.
IN_FORCE = pd.Timestamp("2200-01-01", tz="UTC")
#: How far back the newest stored data of a source is looked for first (then everything).
RECENT = (pd.Timedelta(days=3), pd.Timedelta(days=30))
WEATHER, PRICES = "weather", "prices"


def weather_source(choice: WeatherChoice, connection: Connection | None = None) -> WeatherSource:
    """The adapter of a site's declared weather service."""
    connection = connection or Connection()
    if choice.source == "forecast-solar":
        return ForecastSolar(connection=connection)
    return OpenMeteo(resolution=choice.resolution, forecast_days=choice.forecast_days, connection=connection)


def declared_price_source(site: SiteDeclaration, where: str | None = None) -> PriceSource | None:
    """The adapter of the site's ``prices``, checked against its currency; None without prices.
    A wrong spec, a key missing from the environment or prices in another currency than the
    site's is one ConfigError line starting with ``where`` (default: the site's name)."""
    if site.prices is None:
        return None
    where = where or f"site {site.device_id}"
    try:
        source = price_source(site.prices)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    currency = planning_config(site).currency_code
    if source.currency != currency:
        raise ConfigError(f"{where}: prices: {source.name} prices are in {source.currency} and the site's "
                          f"currency is {currency}; expected a source in the site's currency")
    return source


def check_declaration(site: SiteDeclaration) -> SiteDeclaration:
    """The declaration, once its price source is built: where a site file enters (``--site``)
    a wrong ``prices`` is one line there, not at the first plan, and it names the file as the
    site file's other errors do."""
    declared_price_source(site, where=site.read_from)
    return site


@dataclass
class SiteInputs:
    """One site's outside inputs (the module says what each gives)."""

    store: CloudStore
    device_id: str
    timezone: str
    weather: WeatherSource | None = None
    prices: PriceSource | None = None
    #: Per kind (:data:`WEATHER`, :data:`PRICES`) whose last fetch failed: "stale since … (why)".
    stale: dict[str, str] = field(default_factory=dict)

    def weather_forecast(self) -> WeatherForecast | None:
        if self.weather is not None:
            return StoredWeatherForecast(self.store, self.weather)
        return settings_from().recorded_weather()

    def wholesale(self, at: pd.Timestamp, instants: pd.DatetimeIndex) -> np.ndarray | None:
        """The wholesale price of each instant known at ``at`` (the module's order); None
        without a price source (the tariff needs none). An instant neither published nor
        forecast takes the mean of those that are, not zero: an unknown hour must not look like
        free energy to the plan; with nothing known at all, 0 (the tariff's fixed part)."""
        if self.prices is None:
            return None
        instants = pd.DatetimeIndex(instants)
        known = price_forecast(self.store, self.prices.name, self.prices.area, at, instants, _step(instants),
                               self.timezone).to_numpy(dtype=float)
        if np.isnan(known).all():
            return np.zeros(len(known))
        return np.where(np.isnan(known), np.nanmean(known), known)

    def prices_in_force(self, instants: pd.DatetimeIndex) -> np.ndarray | None:
        """Each instant's price from the latest publication stored, NaN where none is; None
        without a price source."""
        if self.prices is None:
            return None
        instants = pd.DatetimeIndex(instants)
        return published_prices(self.store, self.prices.name, self.prices.area, IN_FORCE, instants,
                                _step(instants)).to_numpy(dtype=float)

    def refresh(self, site_row: Mapping[str, Any], now: pd.Timestamp | None = None,
                down: dict[str, SourceUnavailable] | None = None) -> int:
        """Fetch one weather issue and the prices of the site's local today and tomorrow that
        the store lacks; return the rows stored. A SourceError marks that input stale, as does
        a store left without the price in force now (a service that answers "no data" for
        today): tomorrow not yet published is normal, today missing is not. ``down`` holds the
        services found unreachable in this round of refreshes (weather by source, prices by
        source and area); one in it is not asked again, since a service that timed out for one
        home would make each of a fleet's homes wait out its retries."""
        now = dd.parse_ts(now if now is not None else dd.utc_now())
        down = {} if down is None else down
        rows = 0
        if self.weather is not None:
            rows += self._attempt(WEATHER, self.weather.name, down, lambda: fetch_weather(
                self.store, site_row, self.weather, now), lambda: self._weather_fetched(now))
        if self.prices is not None:
            today = now.tz_convert(self.timezone).normalize()
            start, end = today.tz_convert("UTC"), (today + pd.DateOffset(days=2)).tz_convert("UTC")

            def fetch() -> int:
                stored = fetch_prices(self.store, self.prices, start, end)
                if not knows_present(self.store, self.prices, now):
                    raise NoData(f"{self.prices.name} {self.prices.area}: no price stored for the hour before "
                                 f"{now:%Y-%m-%dT%H:%MZ} and none in the answer; expected the prices in force now")
                return stored

            rows += self._attempt(PRICES, f"{self.prices.name} {self.prices.area}", down, fetch,
                                  lambda: self._prices_fetched(now))
        return rows

    def _attempt(self, kind: str, source: str, down: dict[str, SourceUnavailable], fetch: Callable[[], int],
                 since: Callable[[], pd.Timestamp | None]) -> int:
        """``fetch``'s rows, clearing the kind's stale mark; 0 and the mark on a SourceError,
        or without asking where ``down`` holds the source."""
        try:
            if source in down:
                raise down[source]
            rows = fetch()
        except SourceError as error:
            if isinstance(error, SourceUnavailable):
                down[source] = error
            self._went_stale(kind, source, error, since())
            return 0
        self.stale.pop(kind, None)
        return rows

    def _went_stale(self, kind: str, source: str, error: SourceError, since: pd.Timestamp | None) -> None:
        when = "never fetched" if since is None else f"stale since {since:%Y-%m-%dT%H:%MZ}"
        self.stale[kind] = f"{when} ({error})"
        log.warning("%s: %s from %s unavailable, planning on stored data (%s): %s", self.device_id, kind, source,
                    when, error)

    def _weather_fetched(self, now: pd.Timestamp) -> pd.Timestamp | None:
        return _newest_fetch(self.store, s.WEATHER_FORECASTS, {dd.DEVICE_ID: self.device_id, s.SOURCE: self.weather.name},
                             now)

    def _prices_fetched(self, now: pd.Timestamp) -> pd.Timestamp | None:
        return _newest_fetch(self.store, s.PRICES, {s.SOURCE: self.prices.name, s.AREA: self.prices.area}, now)


def _step(instants: pd.DatetimeIndex) -> pd.Timedelta:
    return instants[1] - instants[0] if len(instants) > 1 else pd.Timedelta(minutes=15)


def _newest_fetch(store: CloudStore, table: str, equals: Mapping[str, Any], now: pd.Timestamp) -> pd.Timestamp | None:
    """The newest ``fetched_at`` of the rows ``equals`` selects: among recent targets first,
    since new data describes the present and after; None when nothing is stored."""
    for back in (*RECENT, None):
        rows = store.read_frame(table, equals, start=None if back is None else now - back)
        if len(rows) and rows[s.FETCHED_AT].notna().any():
            return pd.Timestamp(rows[s.FETCHED_AT].max())
    return None


def declared_inputs(store: CloudStore, site: SiteDeclaration) -> SiteInputs:
    """The inputs a declaration names, read from and stored in ``store``."""
    return SiteInputs(store, site.device_id, site.timezone, None if site.weather is None else weather_source(site.weather),
                      declared_price_source(site))


def site_inputs(store: CloudStore, site_row: Mapping[str, Any] | None) -> SiteInputs | None:
    """The inputs of a stored site (a ``store.sites()`` row); None for a simulated site."""
    declaration = declared_site(site_row) if site_row is not None else None
    return None if declaration is None else declared_inputs(store, declaration)


def stored_site_inputs(store: CloudStore, device_id: str) -> SiteInputs | None:
    """:func:`site_inputs` of the site ``device_id`` names in the store; None when it is no declared site."""
    row = next((r for r in store.sites() if str(r.get(dd.DEVICE_ID)) == device_id), None)
    return site_inputs(store, row)


class SitesWeather:
    """The forecasting models' :class:`WeatherForecast` over many sites: a site that declares
    a weather service reads its stored issues, any other ``fallback`` (the recorded CSV or
    the simulator's forecast)."""

    def __init__(self, store: CloudStore, fallback: WeatherForecast):
        self.fallback = fallback
        self.declared: dict[str, WeatherForecast] = {}
        for row in store.sites():
            try:
                declaration = declared_site(row)
            except ConfigError as error:  # one unreadable row must not stop every site's forecasts
                log.warning("weather of the fallback: %s", error)
                continue
            if declaration is not None and declaration.weather is not None:
                self.declared[declaration.device_id] = StoredWeatherForecast(store, weather_source(declaration.weather))

    def forecast(self, site, issued_at, target_ts) -> pd.DataFrame:
        chosen = self.declared.get(str(site.get(dd.DEVICE_ID)), self.fallback)
        return chosen.forecast(site, issued_at, target_ts)
