"""A real site, declared in a site file: where it is, what it has, what it pays.

A measured home has no seed and no simulator behind it; what the jobs know about it is what
its owner declares. The file is JSON, validated once where it enters (strict types, unknown
fields refused, one line per error, as :mod:`der_core.config`):

    {"device_id": "home-1",
     "location": {"latitude": 52.52, "longitude": 13.40, "altitude_m": 34},
     "timezone": "Europe/Berlin", "country": "DE", "currency": "EUR",
     "pv": {"capacity_kwp": 8.0, "tilt_degrees": 30, "azimuth_degrees": 180, "inverter_kw": 7.0},
     "battery": {"capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5,
                 "round_trip_efficiency": 0.9, "min_soc": 10, "max_soc": 90},
     "ev_charger": {"kw": 11},
     "tariff": "default_tou",
     "weather": "open-meteo"}

``pv``, ``battery`` and ``ev_charger`` may be ``null`` (the home has none). ``tariff`` is the
name of a built-in tariff (``der_core.tariff_file.TARIFFS``), a tariff object
(``der_core.tariff``), the path of a tariff file relative to the site file, or the time-of-use
prices of the simulator configuration's ``grid_price`` section (:class:`TouPrices`). The
declaration holds the tariff itself, so the cloud store keeps it without the file. In the cloud store a declared site's ``config_json``
holds the declaration under :data:`DECLARED`, which tells it from a simulated site's.

``weather`` (optional) names the weather forecast service the site's PV forecast reads:
``"open-meteo"``, ``"forecast-solar"`` or an object with ``source`` and its options
(:class:`WeatherChoice`); absent or null, none. ``prices`` (optional) is a price source's spec
as ``cloud.live.prices.price_source`` takes it, e.g. ``{"source": "octopus", "product":
"AGILE-24-10-01", "region": "C"}``; its full check needs the adapters, so the cloud side makes
it where a site file enters (``cloud.live.inputs.check_declaration``). Published prices price
a dynamic tariff only: with ``prices`` and no ``tariff`` the site pays the published price
(:data:`PUBLISHED_PRICE_TARIFF`), and a fixed or time-of-use tariff beside ``prices`` is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from der_core import der_data as dd
from der_core.config import (
    MIN_ROUND_TRIP,
    BatteryConfig,
    GridPriceConfig,
    HomeLoadConfig,
    SimulatorConfig,
    SolarConfig,
    _Section,
    check_country,
    check_currency,
    check_device_id,
    check_usable,
    check_zone,
    read_json_file,
    reads_device,
    validated,
    validation_line,
)
from der_core.errors import ConfigError
from der_core.money import currency_of
from der_core.tariff import DynamicImport, FixedPrice, Tariff, tou_tariff
from der_core.tariff_file import FILE_SUFFIXES, TARIFFS, load_tariff_file

#: The key of a declared site's ``config_json`` that holds its declaration.
DECLARED = "declared_site"


class Location(_Section):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    altitude_m: float = Field(0.0, ge=-500, le=9000)


#: A battery filling at its own rate in more than a day, or panels of more than this many
#: times their inverter's power, are a site file's units mixed up (Wh or W written as kWh or
#: kW) far more often than a real system: batteries charge in half an hour to ten hours,
#: and panels seldom exceed their inverter by half.
SLOWEST_CHARGE_H = 24.0
MOST_PANELS_PER_INVERTER = 3.0


class PV(_Section):
    """The array. ``tracking`` is ``"fixed"`` (the default) or ``"single-axis"``: a tracker's
    ``tilt_degrees`` and ``azimuth_degrees`` are its axis's (0 and 180 for a flat north-south
    axis), and ``max_angle_degrees``, ``backtrack`` and ``ground_coverage_ratio`` say how it
    turns (``der_core.config.SolarConfig``)."""

    capacity_kwp: float = Field(gt=0, le=10_000)
    tilt_degrees: float = Field(ge=0, le=90)
    azimuth_degrees: float = Field(ge=0, lt=360, description="compass bearing the panels face")
    inverter_kw: float = Field(gt=0, le=10_000, description="AC limit")
    tracking: Literal["fixed", "single-axis"] = "fixed"
    max_angle_degrees: float | None = Field(None, gt=0, le=90)
    backtrack: bool | None = None
    ground_coverage_ratio: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _turns(self) -> PV:
        given = [name for name in TRACKER_FIELDS if getattr(self, name) is not None]
        if self.tracking == "fixed" and given:
            raise ValueError(f"{', '.join(given)} describe{'s' * (len(given) == 1)} a tracker; expected "
                             '"tracking": "single-axis" beside it, or none of them for a fixed array')
        return self

    def solar_fields(self) -> dict[str, Any]:
        """The array as ``SolarConfig`` fields; a tracker's unset ones keep its defaults."""
        turns = {name: getattr(self, name) for name in TRACKER_FIELDS if getattr(self, name) is not None}
        return {"capacity_kw": self.capacity_kwp, "tilt_degrees": self.tilt_degrees,
                "azimuth_degrees": self.azimuth_degrees, "inverter_kw": self.inverter_kw, "tracking": self.tracking,
                **turns}

    def doubts(self) -> list[str]:
        ratio = self.capacity_kwp / self.inverter_kw
        if ratio <= MOST_PANELS_PER_INVERTER:
            return []
        return [f"pv: {self.capacity_kwp:g} kWp of panels on a {self.inverter_kw:g} kW inverter ({ratio:.0f} times it): "
                "panels in W rather than kW?"]


#: A tracker's fields besides its axis; a fixed array has none of them.
TRACKER_FIELDS = ("max_angle_degrees", "backtrack", "ground_coverage_ratio")


class Battery(_Section):
    capacity_kwh: float = Field(gt=0, le=100_000)
    max_charge_kw: float = Field(gt=0, le=100_000)
    max_discharge_kw: float = Field(gt=0, le=100_000)
    round_trip_efficiency: float = Field(ge=MIN_ROUND_TRIP, le=1)
    min_soc: float = Field(ge=0, le=100)
    max_soc: float = Field(ge=0, le=100)
    #: Where a plan starts when no reading says: the middle of the window unless given.
    initial_soc: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _window(self) -> Battery:
        if self.min_soc > self.max_soc:
            raise ValueError(f"min_soc ({self.min_soc}) must not exceed max_soc ({self.max_soc})")
        check_usable(self.capacity_kwh, self.min_soc, self.max_soc)
        if self.initial_soc is not None and not self.min_soc <= self.initial_soc <= self.max_soc:
            raise ValueError(f"initial_soc ({self.initial_soc}) must lie within [min_soc, max_soc] = "
                             f"[{self.min_soc}, {self.max_soc}]")
        return self

    @property
    def start_soc(self) -> float:
        return self.initial_soc if self.initial_soc is not None else (self.min_soc + self.max_soc) / 2

    def doubts(self) -> list[str]:
        hours = self.capacity_kwh / self.max_charge_kw
        if hours <= SLOWEST_CHARGE_H:
            return []
        return [f"battery: {self.capacity_kwh:g} kWh charged at {self.max_charge_kw:g} kW takes {hours:,.0f} h: a "
                f"capacity in Wh ({self.capacity_kwh / 1000:g} kWh)?"]


class EVCharger(_Section):
    kw: float = Field(gt=0, le=350)


class TouPrices(_Section):
    """A time-of-use tariff by its prices alone: the fields of the simulator configuration's
    ``grid_price`` a bill is made of, on the simulated sites' periods (``der_core.tariff.tou_tariff``)."""

    off_peak_price: float = Field(ge=0, le=100)
    shoulder_price: float = Field(ge=0, le=100)
    peak_price: float = Field(ge=0, le=100)
    base_feed_in_tariff: float = Field(ge=0, le=100)
    demand_charge: float = Field(0.0, ge=0, le=10_000, description="per kW of monthly peak import")


def _tariff_value(value: Any) -> Any:
    """A site's ``tariff`` as a :class:`Tariff`: a built-in by name or the time-of-use prices
    of :class:`TouPrices`; a tariff object is left to the field's own validation, whose lines
    name the field inside it."""
    if isinstance(value, str):
        if value not in TARIFFS:
            raise ValueError(f"unknown tariff {dd.shown(value)}; expected one of {', '.join(TARIFFS)}, "
                             f"a tariff file ({', '.join(FILE_SUFFIXES)}) or a tariff object")
        return TARIFFS[value]
    # A field of the tariff object's own makes it one, whatever else it holds: a tariff object
    # with a misspelt field was told the time-of-use prices it lacked.
    if isinstance(value, dict) and not set(value) & set(Tariff.model_fields) and set(value) & set(TouPrices.model_fields):
        try:
            prices = TouPrices.model_validate(value)
        except ValidationError as error:
            raise ValueError(validation_line(error)) from None
        return tou_tariff(prices.off_peak_price, prices.shoulder_price, prices.peak_price, prices.base_feed_in_tariff,
                          prices.demand_charge, name=None)
    return value


#: The tariff of a site that gives ``prices`` and no ``tariff``: it imports at the published
#: price itself (factor 1, no adders or tax, right for a retail price such as Octopus Agile's,
#: which includes VAT) and is paid nothing for exports, since what an export earns is not
#: in a price feed; a site that sells declares its export price in a tariff.
PUBLISHED_PRICE_TARIFF = Tariff(name="published prices", import_price=DynamicImport(kind="dynamic"),
                                export_price=FixedPrice(kind="fixed", price=0.0))
WEATHER_SOURCES: tuple[str, ...] = ("open-meteo", "forecast-solar")


class WeatherChoice(_Section):
    """The weather forecast service of a site, with its options (Open-Meteo's only: the
    resolution asked for and how many days ahead)."""

    source: Literal["open-meteo", "forecast-solar"]
    resolution: Literal["minutely_15", "hourly"] = "minutely_15"
    forecast_days: int = Field(3, ge=1, le=16)


def _weather_value(value: Any) -> Any:
    """A site's ``weather`` given by name as the object of that source with its defaults."""
    if isinstance(value, str):
        if value not in WEATHER_SOURCES:
            raise ValueError(f"unknown weather source {dd.shown(value)}; expected one of {', '.join(WEATHER_SOURCES)} "
                             "or an object with \"source\"")
        return {"source": value}
    return value


class SiteDeclaration(_Section):
    device_id: str
    location: Location
    timezone: str
    country: str = Field(min_length=2, max_length=2, description="ISO 3166 code for public holidays")
    currency: str | None = Field(None, description="ISO 4217 code; null: the country's")
    pv: PV | None
    battery: Battery | None
    ev_charger: EVCharger | None
    tariff: Tariff
    weather: WeatherChoice | None = None
    prices: dict[str, Any] | None = Field(None, description="a price source's spec (cloud.live.prices.price_source)")

    _device_id = field_validator("device_id")(lambda cls, value: check_device_id(value))
    _zone = field_validator("timezone")(lambda cls, value: check_zone(value))
    _country = field_validator("country")(lambda cls, value: check_country(value))
    _currency = field_validator("currency")(lambda cls, value: check_currency(value))

    @field_validator("tariff", mode="before")
    @classmethod
    def _known_tariff(cls, value: Any) -> Any:
        return _tariff_value(value)

    @model_validator(mode="before")
    @classmethod
    def _published_tariff(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tariff" not in data and data.get("prices") is not None:
            return {**data, "tariff": PUBLISHED_PRICE_TARIFF}
        return data

    @field_validator("weather", mode="before")
    @classmethod
    def _named_weather(cls, value: Any) -> Any:
        return _weather_value(value)

    @field_validator("prices")
    @classmethod
    def _priced_tariff(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value.get("source"), str):
            raise ValueError("expected a price source's spec with a \"source\" field, such as {\"source\": \"octopus\", "
                             "\"product\": \"AGILE-24-10-01\", \"region\": \"C\"}")
        tariff = info.data.get("tariff")
        if tariff is not None and tariff.import_price.kind != "dynamic":
            raise ValueError(f"the tariff's import price is {tariff.import_price.kind}, and published prices price only "
                             "a dynamic one; give a tariff with a dynamic import price, no tariff (the published "
                             "price is paid), or no prices")
        return value

    @model_validator(mode="after")
    def _one_currency(self) -> SiteDeclaration:
        """A bill adds the tariff's prices up in the site's money: a tariff priced in another
        currency than the site declares would be read as the site's, unconverted."""
        self.tariff.billing_currency(self.currency)  # refuses two currencies
        return self

    @property
    def billing_currency(self) -> str | None:
        """The currency of the site's plans and bills: its own, else its tariff's; None: its
        country's (``SimulatorConfig.currency_code``)."""
        return self.tariff.billing_currency(self.currency)

    @property
    def read_from(self) -> str:
        """Where the declaration was read from, so that a check made after validation (its
        price source, which needs the cloud's adapters) names the file as validation's own
        errors do. It is kept beside the fields, not as one, so a declaration read back from the
        store still equals the one read from its file."""
        return self.__dict__.get(_READ_FROM, "site file")

    def doubts(self) -> list[str]:
        """What in the declaration looks like units mixed up: said when it is declared, not
        refused, since a large system may be just so."""
        return [*(self.pv.doubts() if self.pv else []), *(self.battery.doubts() if self.battery else [])]

    @field_validator("weather")
    @classmethod
    def _plane_for_forecast_solar(cls, value: WeatherChoice | None, info: ValidationInfo) -> WeatherChoice | None:
        if value is not None and value.source == "forecast-solar" and info.data.get("pv") is None:
            raise ValueError("Forecast.Solar forecasts a PV plane and the site declares no pv; expected open-meteo "
                             "or a pv section")
        pv = info.data.get("pv")
        if value is not None and value.source == "forecast-solar" and pv is not None and pv.tracking != "fixed":
            raise ValueError("Forecast.Solar forecasts a fixed PV plane and the site's panels track the sun; expected "
                             "open-meteo, whose sky the site's own tracker physics turns into PV")
        return value


_READ_FROM = "_read_from"


def build_site(data: Any, source: str = "site file", folder: str | Path = ".") -> SiteDeclaration:
    """Validate a mapping into a :class:`SiteDeclaration`, or raise one-line :class:`ConfigError`.
    A ``tariff`` naming a tariff file (by its suffix) is read from ``folder``, and a bad one is
    one line naming that file and its field."""
    tariff = data.get("tariff") if isinstance(data, dict) else None
    if isinstance(tariff, str) and tariff not in TARIFFS and tariff.lower().endswith(FILE_SUFFIXES):
        data = {**data, "tariff": load_tariff_file(Path(folder) / tariff)}
    site = validated(SiteDeclaration, data, source)
    site.__dict__[_READ_FROM] = source
    return site


def load_site_file(path: str | Path) -> SiteDeclaration:
    """Read and validate a site file; a tariff file it names is read relative to it."""
    hint = "write one as docs/operations.md (\"Declaring a real site\") shows"
    return build_site(read_json_file(path, "site file", hint), source=str(path), folder=Path(path).parent)


def site_row(site: SiteDeclaration) -> dict[str, Any]:
    """The ``sites`` row (``der_data.SITE_FIELDS``) of a declared site. A home without PV
    has 0 kWp and no inverter, one without a battery 0 kWh, so jobs reading the columns see
    no equipment rather than a default one."""
    pv, battery = site.pv, site.battery
    return {
        "device_id": site.device_id,
        "latitude": site.location.latitude,
        "longitude": site.location.longitude,
        "altitude_m": site.location.altitude_m,
        "timezone": site.timezone,
        "country": site.country,
        "pv_capacity_kw": pv.capacity_kwp if pv else 0.0,
        "tilt_degrees": pv.tilt_degrees if pv else None,
        "azimuth_degrees": pv.azimuth_degrees if pv else None,
        "inverter_kw": pv.inverter_kw if pv else None,
        "battery_capacity_kwh": battery.capacity_kwh if battery else 0.0,
        "battery_max_charge_kw": battery.max_charge_kw if battery else 0.0,
        "battery_max_discharge_kw": battery.max_discharge_kw if battery else 0.0,
        "battery_round_trip_efficiency": battery.round_trip_efficiency if battery else None,
        "battery_min_soc": battery.min_soc if battery else None,
        "battery_max_soc": battery.max_soc if battery else None,
        "has_ev": site.ev_charger is not None,
        "config_json": json.dumps({DECLARED: site.model_dump(mode="json"), "currency": site.billing_currency}, sort_keys=True),
    }


def _stored_declaration(row: Mapping[str, Any]) -> Any:
    """What a ``sites`` row holds under :data:`DECLARED`, unread; None when it holds nothing there."""
    text = row.get("config_json")
    if not isinstance(text, str) or not text:
        return None
    try:
        stored = json.loads(text)
    except ValueError:
        return None
    return stored.get(DECLARED) if isinstance(stored, dict) else None


def is_declared(row: Mapping[str, Any]) -> bool:
    """Whether a ``sites`` row is a declared site's, read or not: one declared under a looser
    rule than this version's is still a real site, never a simulated one, and telling it so
    must not fail for every other site."""
    return _stored_declaration(row) is not None


def declared_site(row: Mapping[str, Any]) -> SiteDeclaration | None:
    """The declaration a ``sites`` row holds; None for a simulated site's row (or one without
    a configuration). A declaration this version no longer reads is a :class:`ConfigError`
    that says to declare the site again."""
    stored = _stored_declaration(row)
    if stored is None:
        return None
    source = f"site {row.get('device_id')} in the cloud store"
    try:
        return build_site(stored, source=source)
    except ConfigError as error:
        raise ConfigError(f"{error}; declare it again with run_cloud_sync.py --site FILE") from None


def unreadable(row: Mapping[str, Any]) -> str | None:
    """Why this version cannot read the declaration a ``sites`` row holds (the line to show,
    saying to declare the site again); None when it reads it or the row declares nothing. A
    job over every site skips such a row with this reason rather than failing every site."""
    try:
        declared_site(row)
    except ConfigError as error:
        return str(error)
    return None


def site_currency(row: Mapping[str, Any]) -> str:
    """The currency of a ``sites`` row: its configuration's, else its country's; "" for a
    device with neither (readings imported before its site was declared), whose prices are in
    a currency nobody named: calling them dollars would be a guess shown as a fact."""
    try:
        configured = json.loads(row.get("config_json") or "{}").get("currency")
    except (ValueError, AttributeError):
        configured = None
    configured = configured if isinstance(configured, str) else None
    if not configured and not row.get("country"):
        return ""
    return currency_of(row.get("country") or "", configured)


def site_kind(row: Mapping[str, Any] | None) -> str:
    """``declared``, ``device`` (a gateway's configuration reading a real device),
    ``simulated`` (a simulator configuration) or ``none`` (no row)."""
    if row is None:
        return "none"
    if is_declared(row):
        return "declared"
    return "device" if reads_device(row.get("config_json")) else "simulated"


def planning_config(site: SiteDeclaration) -> SimulatorConfig:
    """The declaration in the shape the optimizer reads a site in: the declared location,
    equipment and tariff, nothing simulated (no price volatility or spikes, no equipment the
    site lacks: 0 kWp without PV, a 0 kWh battery without one, no car without a charger)."""
    pv, battery, tariff = site.pv, site.battery, site.tariff
    solar = SolarConfig(latitude=site.location.latitude, longitude=site.location.longitude,
                        altitude_m=site.location.altitude_m,
                        **(pv.solar_fields() if pv else {"capacity_kw": 0.0}))
    store = BatteryConfig(capacity_kwh=0.0, max_charge_rate_kw=0.0, max_discharge_rate_kw=0.0) if battery is None else \
        BatteryConfig(capacity_kwh=battery.capacity_kwh, max_charge_rate_kw=battery.max_charge_kw,
                      max_discharge_rate_kw=battery.max_discharge_kw, round_trip_efficiency=battery.round_trip_efficiency,
                      min_soc=battery.min_soc, max_soc=battery.max_soc, initial_soc=battery.start_soc)
    charger = site.ev_charger
    home = HomeLoadConfig(has_ev=charger is not None, ev_charging_kw=charger.kw if charger else 0.0)
    grid = GridPriceConfig(demand_charge=tariff.demand_charge_per_kw, volatility=0.0, spike_probability_per_day=0.0)
    return SimulatorConfig(device_id=site.device_id, timezone=site.timezone, country=site.country,
                           currency=site.billing_currency, solar=solar, battery=store, home_load=home,
                           grid_price=grid, tariff=tariff)
