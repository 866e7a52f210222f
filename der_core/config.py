"""Simulator configuration: validated once, where it enters, into typed objects.

Every field of the spec's ``config.json`` is here with its spec default, plus the fields
the physics needs (longitude, time zone, tilt, azimuth, inverter size, battery control
mode). Unknown keys are refused so a typo never silently falls back to a default, and types
are strict (``"300"`` is not a number, ``1`` is not ``true``) so a value means what it says.
Error lines are built here rather than taken from the validator, which quotes input whole.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from der_core import der_data as dd
from der_core.errors import ConfigError
from der_core.files import input_problem, read_input
from der_core.money import check_currency, currency_of
from der_core.section import Section
from der_core.tariff import Tariff

DEFAULT_EDGE_STORE = "data/edge.db"



def check_device_id(value: str) -> str:
    """A device id the data contract accepts (``der_data.device_id_problem``)."""
    problem = dd.device_id_problem(value)
    if problem is not None:
        raise ValueError(problem.removeprefix("device_id "))
    return value


#: Names the zone database holds that name no place: ``localtime`` is whatever zone the
#: machine reading the file is set to, and ``Factory`` is the placeholder of a zone not set.
NOT_A_PLACE_ZONES = ("localtime", "Factory")


def check_zone(value: str) -> str:
    """An IANA time zone this machine knows, of a place: a site's days, tariff periods and
    solar noon must not change with the machine a job runs on."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {dd.shown(value)}; expected an IANA name such as 'Europe/Berlin'") from None
    if value in NOT_A_PLACE_ZONES:
        raise ValueError(f"time zone {dd.shown(value)} names no place (it is the machine's own or none); "
                         "expected the site's IANA name such as 'Europe/Berlin'")
    return value


def check_country(value: str) -> str:
    """A country with a public-holiday calendar: the tariff's holidays and the calendar
    features come from these calendars, and a code they lack would silently mean a year
    without holidays."""
    if value not in holidays.list_supported_countries():
        raise ValueError(f"{dd.shown(value)} is not a country with a public-holiday calendar; "
                         "expected an ISO 3166 alpha-2 code such as 'US', 'DE' or 'GB'")
    return value


_Section = Section

#: The least capacity a battery may declare: below it (a denormal 5e-324, say) every step's
#: energy rounds to nothing and the plans divide by it.
LEAST_BATTERY_KWH = 0.01


def check_usable(capacity_kwh: float, min_soc: float, max_soc: float) -> None:
    """A battery stores something between its limits: at least :data:`LEAST_BATTERY_KWH`, and
    a window above its minimum (with ``min_soc == max_soc`` it can neither charge nor
    discharge, and the reserve policy's energy grid has no step)."""
    if capacity_kwh < LEAST_BATTERY_KWH:
        raise ValueError(f"capacity_kwh ({capacity_kwh:g}) is below {LEAST_BATTERY_KWH} kWh; expected a battery's "
                         "capacity (0 in a simulator configuration: no battery)")
    if min_soc >= max_soc:
        raise ValueError(f"min_soc ({min_soc}) equals max_soc ({max_soc}): the battery could store nothing; expected "
                         "min_soc below max_soc")


class SolarConfig(_Section):
    capacity_kw: float = Field(10.0, ge=0, le=10_000, description="DC nameplate (kWp)")
    latitude: float = Field(37.7749, ge=-90, le=90)
    longitude: float = Field(-122.4194, ge=-180, le=180)
    altitude_m: float = Field(16.0, ge=-500, le=9000)
    tilt_degrees: float = Field(20.0, ge=0, le=90, description="the panels' tilt; a tracker's axis tilt")
    azimuth_degrees: float = Field(180.0, ge=0, lt=360,
                                   description="compass bearing the panels face; a tracker's axis bearing")
    panel_efficiency: float = Field(0.20, gt=0, le=0.5)
    temp_coefficient: float = Field(-0.004, ge=-0.02, le=0, description="power change per kelvin")
    inverter_kw: float | None = Field(None, gt=0, description="AC limit; defaults to 0.9 x capacity_kw")
    system_losses: float = Field(0.10, ge=0, lt=1, description="soiling, wiring, mismatch")
    tracking: Literal["fixed", "single-axis"] = "fixed"
    #: A single-axis tracker's rotation limit either side of flat, whether it backtracks to
    #: keep its rows from shading each other, and its rows' ground coverage ratio (panel
    #: width over row spacing): what ``pvlib.tracking.singleaxis`` turns the sun into the
    #: panels' angle with. Most trackers turn ±52–60° and backtrack.
    max_angle_degrees: float = Field(60.0, gt=0, le=90)
    backtrack: bool = True
    ground_coverage_ratio: float = Field(0.35, gt=0, lt=1)

    @property
    def inverter_limit_kw(self) -> float:
        return self.inverter_kw if self.inverter_kw is not None else 0.9 * self.capacity_kw


class BatterySign(str, Enum):
    """Which direction of battery power a device reports as positive."""

    DISCHARGE_POSITIVE = "discharge-positive"
    CHARGE_POSITIVE = "charge-positive"


class MeterSign(str, Enum):
    """Which direction of grid power a meter reports as positive."""

    IMPORT_POSITIVE = "import-positive"
    EXPORT_POSITIVE = "export-positive"


class PvPoint(str, Enum):
    """The inverter point read as PV generation: AC output ``W``, or DC input ``DCW`` (for
    hybrids whose AC output is net of the battery)."""

    W = "W"
    DCW = "DCW"


#: The ``source.kind`` of a simulated site: every other kind reads a real device.
SIMULATOR = "simulator"


class SimulatorSource(_Section):
    """Readings from the simulated site (the default)."""

    kind: Literal["simulator"] = SIMULATOR


def reads_device(config_json: str | None) -> bool:
    """Whether a site row's stored configuration reads a real device (a ``source.kind`` other
    than the simulator; one that names none, or cannot be read, is simulated). Such a site is
    a real site, whatever else its configuration describes: no forecast or plan of it may read
    the simulator, and a field its device does not measure is a gap, not damage."""
    try:
        data = json.loads(config_json or "{}")
        kind = data.get("source", {}).get("kind", SIMULATOR) if isinstance(data, dict) else SIMULATOR
    except (ValueError, AttributeError):
        return False
    return isinstance(kind, str) and kind != SIMULATOR


def check_poll(value: float) -> float:
    """A polling period: 0 (off) or at least a second, so no setting polls a device flat out."""
    if 0 < value < 1:
        raise ValueError(f"{value:g} s would poll the device flat out; expected 0 (off) or at least 1")
    return value


class MeasuredSource(_Section):
    """What every real device's source shares: how often, between readings, the gateway reads
    the device to hold the schedule's import cap (``edge_gateway/device_control.py``)."""

    cap_poll_s: float = Field(10.0, ge=0, le=3600, description="the device is read this often between readings to hold "
                              "the import cap; 0: the cap is not held between readings")

    _poll = field_validator("cap_poll_s")(lambda cls, value: check_poll(value))


class ModbusSunSpecSource(MeasuredSource):
    """Readings from a real inverter, battery and meter with a SunSpec map over Modbus TCP
    (``edge_gateway/sources/modbus_sunspec.py``). The sign defaults are the usual reading of
    the SunSpec models (a meter at the grid connection counts import as positive, a battery's
    DC power is positive when it discharges into the inverter); devices differ, so both are
    settings, to check once against a known import and a known charge."""

    kind: Literal["modbus-sunspec"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(502, ge=1, le=65_535)
    unit_id: int = Field(1, ge=0, le=255)
    base_address: int | None = Field(None, ge=0, le=65_533, description="SunSpec map start; null: try 40000, 0, 50000")
    timeout_s: float = Field(3.0, gt=0, le=60)
    sample_every_s: float = Field(10.0, ge=1, le=3600, description="instants averaged into each reading")
    battery_power_sign: BatterySign = Field(BatterySign.DISCHARGE_POSITIVE, strict=False)
    meter_power_sign: MeterSign = Field(MeterSign.IMPORT_POSITIVE, strict=False)
    pv_point: PvPoint = Field(PvPoint.W, strict=False)
    control: bool = Field(True, description="send battery commands through SunSpec storage control (model 124)")
    revert_after_s: int = Field(900, ge=10, le=65_534, description="the device returns to its own mode this long after a command")
    reconnect_max_s: float = Field(60.0, ge=1, le=3600, description="longest wait between reconnection attempts")

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        return check_host(value)


def check_host(value: str) -> str:
    """A host name or address, without scheme or path."""
    if any(c.isspace() or c == "/" for c in value):
        raise ValueError(f"{dd.shown(value)} is not a host name or address; expected e.g. '192.168.1.50'")
    return value


#: The reading fields a device reports (``edge_gateway.sources.base.Measured``); the house
#: load follows from them, every other field is the simulator's or the cloud's.
MEASURED_FIELDS = (dd.SOLAR_KW, dd.BATTERY_SOC, dd.BATTERY_POWER, dd.NET_GRID_FLOW)


def check_measured_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A mapping keyed by reading fields a device reports, naming the first key that is not one."""
    for name in fields:
        if name not in MEASURED_FIELDS:
            raise ValueError(f"{dd.shown(name)} is not a reading field a device reports; expected one of {', '.join(MEASURED_FIELDS)}")
    return fields


def check_topic(value: str) -> str:
    """An MQTT topic to subscribe or publish to: one device value per topic, so no wildcard."""
    if "+" in value or "#" in value or "\x00" in value:
        raise ValueError(f"{dd.shown(value)} is not a single topic; expected a topic without the wildcards '+' and '#'")
    return value


Sign = Literal[1, -1]
#: The placeholders a command payload may hold (``edge_gateway.sources.mqtt_bridge.command_payload``).
POWER_PLACEHOLDERS = ("{power_kw}", "{power_w}")


class MqttField(_Section):
    """Where one reading field arrives: a topic, the value's place in a JSON payload, and the
    factor and sign that turn it into the contract's unit and direction."""

    topic: str = Field(min_length=1, max_length=1024)
    path: str | None = Field(None, min_length=1, max_length=256, description="dotted JSON path, list items by index ('a.b.0.c'); null: the payload is the number")
    scale: float = Field(1.0, description="multiplies the value into the field's unit, e.g. 0.001 for W into kW")
    sign: Sign = Field(1, description="-1 where the bridge counts the other direction as positive")

    _topic = field_validator("topic")(lambda cls, value: check_topic(value))

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("a scale of 0 would report every value as 0; expected e.g. 1.0, or 0.001 for W into kW")
        return value


class MqttCommand(_Section):
    """How a battery power is sent to the bridge: a payload template published on a topic, and
    optionally a mode topic that says whether the device follows it or runs its own rule."""

    topic: str = Field(min_length=1, max_length=1024)
    payload: str = Field("{power_w}", min_length=1, max_length=1024, description="template with {power_kw}, {power_w}, {mode}")
    sign: Sign = Field(1, description="-1 where the device takes discharging as positive")
    mode_topic: str | None = Field(None, min_length=1, max_length=1024)
    manual_mode: str = Field("manual", max_length=256, description="the mode in which the device follows the payload")
    auto_mode: str = Field("auto", max_length=256, description="the device's own mode, handed back when no plan is in force")

    _topics = field_validator("topic", "mode_topic")(lambda cls, value: value if value is None else check_topic(value))

    @field_validator("payload")
    @classmethod
    def _has_power(cls, value: str) -> str:
        if not any(p in value for p in POWER_PLACEHOLDERS):
            raise ValueError(f"{dd.shown(value)} holds no power; expected a template with {{power_w}} or {{power_kw}}")
        return value


class MqttSource(MeasuredSource):
    """Readings from any MQTT bridge that publishes a device's values (OpenDTU, Solar
    Assistant, Zigbee2MQTT, a vendor's own), and battery commands published back to it
    (``edge_gateway/sources/mqtt_bridge.py``). The password comes from ``MQTT_PASSWORD`` only,
    never from this file."""

    kind: Literal["mqtt"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65_535)
    username: str | None = Field(None, min_length=1, max_length=256)
    fields: dict[str, MqttField] = Field(min_length=1)
    command: MqttCommand | None = None

    _host = field_validator("host")(lambda cls, value: check_host(value))
    _fields = field_validator("fields")(lambda cls, value: check_measured_fields(value))


def check_entity_id(value: str) -> str:
    """A Home Assistant entity id, ``<domain>.<object id>``."""
    domain, dot, name = value.partition(".")
    if not (dot and domain and name and all(part.replace("_", "").isalnum() and part.isascii() and part == part.lower()
                                            for part in (domain, name))):
        raise ValueError(f"{dd.shown(value)} is not an entity id; expected '<domain>.<name>' in lower case, e.g. 'sensor.pv_power'")
    return value


def check_service(value: str) -> str:
    """A Home Assistant service, ``<domain>.<service>`` (the same shape as an entity id)."""
    try:
        return check_entity_id(value)
    except ValueError:
        raise ValueError(f"{dd.shown(value)} is not a service; expected '<domain>.<service>', e.g. 'number.set_value'") from None


class HomeAssistantEntity(_Section):
    """A sensor read as one reading field; its unit comes from its ``unit_of_measurement``."""

    entity_id: str = Field(max_length=255)
    sign: Sign = Field(1, description="-1 where the sensor counts the other direction as positive")

    _entity = field_validator("entity_id")(lambda cls, value: check_entity_id(value))


class HomeAssistantMode(_Section):
    """A select (or input_select) whose option says whether the battery follows the gateway."""

    service: str = Field("select.select_option", max_length=255)
    entity_id: str = Field(max_length=255)
    manual: str = Field("manual", min_length=1, max_length=255, description="the option while the gateway commands")
    auto: str = Field("auto", min_length=1, max_length=255, description="the device's own mode, handed back when no plan is in force")

    _service = field_validator("service")(lambda cls, value: check_service(value))
    _entity = field_validator("entity_id")(lambda cls, value: check_entity_id(value))


class HomeAssistantCommand(_Section):
    """The battery power sent as a service call with ``value`` (a number or input_number entity
    in W or kW, as its ``unit_of_measurement`` says)."""

    service: str = Field("number.set_value", max_length=255)
    entity_id: str = Field(max_length=255)
    sign: Sign = Field(1, description="-1 where the entity takes discharging as positive")
    mode: HomeAssistantMode | None = None

    _service = field_validator("service")(lambda cls, value: check_service(value))
    _entity = field_validator("entity_id")(lambda cls, value: check_entity_id(value))


class HomeAssistantSource(MeasuredSource):
    """Readings from Home Assistant entities over its REST API, battery commands as service
    calls (``edge_gateway/sources/homeassistant.py``). The token comes from
    ``HOMEASSISTANT_TOKEN`` only, never from this file."""

    kind: Literal["homeassistant"]
    url: str = Field("http://homeassistant.local:8123", min_length=8, max_length=2048)
    entities: dict[str, str | HomeAssistantEntity] = Field(min_length=1)
    command: HomeAssistantCommand | None = None
    timeout_s: float = Field(5.0, gt=0, le=60)
    sample_every_s: float = Field(10.0, ge=1, le=3600, description="instants averaged into each reading")

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or any(c in rest for c in "@?# ") or "/" in rest.rstrip("/"):
            raise ValueError(f"{dd.shown(value)} is not Home Assistant's address; expected e.g. 'http://homeassistant.local:8123'")
        return value.rstrip("/")

    @field_validator("entities")
    @classmethod
    def _entities(cls, value: dict) -> dict:
        check_measured_fields(value)
        return {name: HomeAssistantEntity(entity_id=check_entity_id(e)) if isinstance(e, str) else e for name, e in value.items()}


#: The ``source`` section: its ``kind`` selects the model, so a field of another kind is
#: refused as unknown rather than ignored.
SourceConfig = Annotated[SimulatorSource | ModbusSunSpecSource | MqttSource | HomeAssistantSource, Field(discriminator="kind")]


class BatteryMode(str, Enum):
    SELF_CONSUMPTION = "self_consumption"
    TOU_ARBITRAGE = "tou_arbitrage"
    SETPOINT = "setpoint"


#: The lowest round-trip efficiency a battery may be declared with (lead-acid and flow
#: batteries return 65-85 %, lithium 85-95 %); below it a plan would buy energy to burn it.
MIN_ROUND_TRIP = 0.5


def one_way_efficiency(round_trip_efficiency: float) -> float:
    """The efficiency of each of charging and discharging: a battery rated by one round-trip
    figure loses the same share each way, so each keeps its square root."""
    return math.sqrt(round_trip_efficiency)


class BatteryConfig(_Section):
    capacity_kwh: float = Field(13.5, ge=0, le=100_000)
    max_charge_rate_kw: float = Field(5.0, ge=0, le=100_000)
    max_discharge_rate_kw: float = Field(5.0, ge=0, le=100_000)
    round_trip_efficiency: float = Field(0.90, ge=MIN_ROUND_TRIP, le=1)
    initial_soc: float = Field(50.0, ge=0, le=100)
    min_soc: float = Field(10.0, ge=0, le=100)
    max_soc: float = Field(90.0, ge=0, le=100)
    mode: BatteryMode = Field(BatteryMode.SELF_CONSUMPTION, strict=False)  # JSON holds the name, never the enum
    nominal_voltage_v: float = Field(51.2, gt=0, description="16-cell LFP pack")
    internal_resistance_ohm: float = Field(0.02, ge=0)
    initial_cycles: float = Field(0.0, ge=0)
    fade_per_cycle_percent: float = Field(0.004, ge=0, description="health lost per equivalent full cycle")
    calendar_fade_percent_per_year: float = Field(1.0, ge=0)

    @property
    def one_way_efficiency(self) -> float:
        """Efficiency of charging, and of discharging (:func:`one_way_efficiency`)."""
        return one_way_efficiency(self.round_trip_efficiency)

    @model_validator(mode="after")
    def _soc_window(self) -> BatteryConfig:
        if self.min_soc > self.max_soc:
            raise ValueError(f"min_soc ({self.min_soc}) must not exceed max_soc ({self.max_soc})")
        if self.capacity_kwh > 0:  # 0: no battery
            check_usable(self.capacity_kwh, self.min_soc, self.max_soc)
        if not self.min_soc <= self.initial_soc <= self.max_soc:
            raise ValueError(
                f"initial_soc ({self.initial_soc}) must lie within [min_soc, max_soc] = "
                f"[{self.min_soc}, {self.max_soc}]"
            )
        return self


class HomeLoadConfig(_Section):
    base_load_kw: float = Field(0.5, ge=0, le=1000)
    peak_load_kw: float = Field(8.0, gt=0, le=10_000)
    has_ev: bool = True
    ev_charging_kw: float = Field(7.2, ge=0, le=350)
    ev_battery_kwh: float = Field(60.0, gt=0)
    hvac_capacity_kw: float = Field(3.5, ge=0, le=1000)
    cooling_setpoint_celsius: float = Field(24.0, ge=10, le=35)
    heating_setpoint_celsius: float = Field(19.0, ge=5, le=30)

    @property
    def ev_charger_kw(self) -> float:
        """The rating a car charges at; 0 for a home without one."""
        return self.ev_charging_kw if self.has_ev else 0.0

    @model_validator(mode="after")
    def _setpoints(self) -> HomeLoadConfig:
        if self.heating_setpoint_celsius > self.cooling_setpoint_celsius:
            raise ValueError("heating_setpoint_celsius must not exceed cooling_setpoint_celsius")
        if self.base_load_kw > self.peak_load_kw:
            raise ValueError(f"base_load_kw ({self.base_load_kw}) must not exceed peak_load_kw ({self.peak_load_kw})")
        return self


class GridPriceConfig(_Section):
    off_peak_price: float = Field(0.08, ge=0, le=100)
    shoulder_price: float = Field(0.15, ge=0, le=100)
    peak_price: float = Field(0.30, ge=0, le=100)
    base_feed_in_tariff: float = Field(0.05, ge=0, le=100)
    demand_charge: float = Field(10.0, ge=0, le=10_000, description="per kW of monthly peak import")
    volatility: float = Field(0.15, ge=0, le=2)
    spike_probability_per_day: float = Field(0.03, ge=0, le=1)


class SimulatorConfig(_Section):
    device_id: str = "edge-gateway-001"
    interval_seconds: int = Field(300, ge=1, le=86_400)
    output_file: str | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    timezone: str = "America/Los_Angeles"
    country: str = Field("US", min_length=2, max_length=2, description="ISO 3166 code for public holidays")
    currency: str | None = Field(None, description="ISO 4217 code money is shown in; null: its tariff's, else the "
                                                  "country's (money.currency_of)")
    edge_store_path: str = DEFAULT_EDGE_STORE
    solar: SolarConfig = SolarConfig()
    battery: BatteryConfig = BatteryConfig()
    home_load: HomeLoadConfig = HomeLoadConfig()
    grid_price: GridPriceConfig = GridPriceConfig()
    source: SourceConfig = SimulatorSource()
    tariff: Tariff | None = Field(None, description="what plans and bills price energy with (der_core.tariff); "
                                  "null: grid_price's time-of-use; the simulated prices stay grid_price's")

    _device_id = field_validator("device_id")(lambda cls, value: check_device_id(value))
    _known_zone = field_validator("timezone")(lambda cls, value: check_zone(value))
    _known_country = field_validator("country")(lambda cls, value: check_country(value))
    _currency_code = field_validator("currency")(lambda cls, value: check_currency(value))

    @property
    def reads_device(self) -> bool:
        """A gateway reading a real device (``reads_device`` of a stored row says why it
        matters): a real site, never planned on the simulator."""
        return self.source.kind != SIMULATOR

    @model_validator(mode="after")
    def _one_currency(self) -> SimulatorConfig:
        if self.tariff is not None:
            self.tariff.billing_currency(self.currency)  # refuses two currencies
        return self

    @property
    def currency_code(self) -> str:
        """The currency the site's money is shown in: ``currency``, else its tariff's, whose
        prices every bill adds up (``Tariff.billing_currency``), else the country's."""
        billing = self.currency if self.tariff is None else self.tariff.billing_currency(self.currency)
        return currency_of(self.country, billing)

    @property
    def effective_seed(self) -> int:
        """The seed in force: ``seed`` or, when null, one derived from ``device_id``.

        Deriving it (rather than drawing one) keeps a gateway's simulated past stable across
        restarts, so a rerun never rewrites readings already stored.
        """
        return self.seed if self.seed is not None else zlib.crc32(self.device_id.encode())


#: JSON type names, for "expected a number, got a string" lines.
_JSON_TYPES = {str: "a string", bool: "true/false", int: "an integer", float: "a number", list: "a list",
               dict: "an object", type(None): "null"}
_MAX_DEPTH = 32  # the spec's file nests two levels; far deeper is not a configuration
#: The errors of a value of the wrong shape, by the shape expected: their own messages name the
#: class the value would have become (``instance of Battery``) and not what was given.
_SHAPES = {"model_type": "an object", "model_attributes_type": "an object", "dict_type": "an object",
           "list_type": "a list"}


def validation_line(error: ValidationError) -> str:
    """The first error of a validation, as one line naming the field and what was expected."""
    first = error.errors(include_url=False, include_context=False, include_input=True)[0]
    location = ".".join(str(part) for part in first["loc"]) or "config"
    location = location if len(location) <= 80 and location.isprintable() else dd.shown(location, 80)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{location}: unknown field; expected one of the documented fields"
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a section whose "kind" selects its fields
        context = error.errors(include_url=False)[0].get("ctx", {})
        given = f"got {dd.shown(context['tag'])}" if "tag" in context else "missing"
        return f"{location}.{context.get('discriminator', 'kind').strip(chr(39))}: {given}; expected one of {context.get('expected_tags', 'the documented kinds')}"
    given = first.get("input")
    if first["type"] in _SHAPES:
        shown = "" if given is None or isinstance(given, (dict, list)) else f" {dd.shown(given)}"
        return f"{location}: expected {_SHAPES[first['type']]}, got {_JSON_TYPES.get(type(given), type(given).__name__)}{shown}"
    if first["type"] != "missing" and not isinstance(given, (dict, list)) and first["type"] != "value_error":
        kind = f"{_JSON_TYPES.get(type(given), type(given).__name__)} " if first["type"].endswith("_type") else ""
        return f"{location}: {message} (got {kind}{dd.shown(given)})"
    return f"{location}: {message}"


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, counted no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, source: str) -> M:
    """Validate a parsed JSON document into ``model``, or raise one-line :class:`ConfigError`:
    a top level that is no object, or nesting deeper than any documented section, is refused
    before validation, whose own messages would quote the whole input."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
    if _depth(data, _MAX_DEPTH) > _MAX_DEPTH:
        raise ConfigError(f"{source}: nested more than {_MAX_DEPTH} levels deep; expected the documented sections")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {validation_line(error)}") from None


def build_config(data: dict[str, Any], source: str = "config") -> SimulatorConfig:
    """Validate a mapping into a :class:`SimulatorConfig`, or raise one-line :class:`ConfigError`."""
    return validated(SimulatorConfig, data, source)


def load_config(path: str | Path) -> SimulatorConfig:
    """Read and validate a JSON config file."""
    hint = f"create one with --generate-config --config {path}"
    return build_config(read_json_file(path, "config file", hint), source=str(path))


#: A configuration, site or tariff file is read whole: larger than this it is not one.
MAX_JSON_BYTES = 16 * 2**20


def read_json_file(path: str | Path, what: str, missing_hint: str) -> Any:
    """A JSON file's parsed content, or a one-line :class:`ConfigError` naming ``what`` was
    wrong with it (``missing_hint`` says how to make one that is missing)."""
    path = Path(path)
    if input_problem(path) == "not found":
        raise ConfigError(f"{path}: {what} not found; {missing_hint}")
    raw = read_input(path, MAX_JSON_BYTES, dd.shown(str(path), 200), f"{what} (a JSON file)")
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark Windows editors write first; no JSON reader needs it
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); "
                          "expected a JSON file in UTF-8") from None

    def refuse_constant(name: str) -> float:  # Python's reader accepts NaN and Infinity; JSON does not
        raise ConfigError(f"{path}: {name} is not a JSON number; expected plain JSON numbers")

    def refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """A field written twice in one object: Python's reader keeps the last silently, and
        which of two batteries or tariffs the owner meant cannot be told."""
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ConfigError(f"{path}: field {dd.shown(key)} is written twice in one object; expected each field once")
            seen.add(key)
        return dict(pairs)

    try:
        return json.loads(text, parse_constant=refuse_constant, object_pairs_hook=refuse_repeats)
    except json.JSONDecodeError as error:
        # A comment is what an editor, YAML or JSON5 allows and the reader's own words ("Expecting value") do not name.
        met = "a comment, which JSON does not allow; remove it" if text.startswith(("//", "/*", "#"), error.pos) else error.msg
        raise ConfigError(f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {met}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; expected the documented sections") from None
    except ValueError:  # the only other refusal: an integer with more digits than Python converts
        raise ConfigError(f"{path}: a number with thousands of digits; expected plain JSON numbers") from None


def config_to_dict(config: SimulatorConfig) -> dict[str, Any]:
    """The configuration as JSON data; ``tariff`` only when one is set, so a simulator's file
    holds the spec's fields."""
    return config.model_dump(mode="json", exclude={"tariff"} if config.tariff is None else None)


def write_config(config: SimulatorConfig, path: str | Path) -> Path:
    """Write ``config`` as JSON; the folder must exist (callers check it and say so)."""
    path = Path(path)
    path.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    return path


def site_record(config: SimulatorConfig) -> dict[str, Any]:
    """The site row (``der_data.SITE_FIELDS``) describing a gateway's configuration."""
    solar, battery = config.solar, config.battery
    return {
        "device_id": config.device_id,
        "latitude": solar.latitude,
        "longitude": solar.longitude,
        "altitude_m": solar.altitude_m,
        "timezone": config.timezone,
        "country": config.country,
        "pv_capacity_kw": solar.capacity_kw,
        "tilt_degrees": solar.tilt_degrees,
        "azimuth_degrees": solar.azimuth_degrees,
        "inverter_kw": solar.inverter_limit_kw,
        "battery_capacity_kwh": battery.capacity_kwh,
        "battery_max_charge_kw": battery.max_charge_rate_kw,
        "battery_max_discharge_kw": battery.max_discharge_rate_kw,
        "battery_round_trip_efficiency": battery.round_trip_efficiency,
        "battery_min_soc": battery.min_soc,
        "battery_max_soc": battery.max_soc,
        "has_ev": config.home_load.has_ev,
        "config_json": json.dumps(config_to_dict(config), sort_keys=True),
    }


def with_overrides(config: SimulatorConfig, flags: Mapping[str, str] | None = None, **overrides: Any) -> SimulatorConfig:
    """A copy with top-level fields replaced, validated again. ``flags`` names the flag each
    field came from (``{"interval_seconds": "--interval"}``): a value refused is said under the
    flag the user typed, not a field name they never saw."""
    data = config_to_dict(config)
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    try:
        return SimulatorConfig.model_validate(data)
    except ValidationError as error:
        line = validation_line(error)
        field = str(error.errors(include_url=False)[0]["loc"][0]) if error.errors() else ""
        flag = (flags or {}).get(field) if field in given else None
        if flag is not None and line.startswith(f"{field}:"):
            raise ConfigError(f"{flag}:{line.removeprefix(f'{field}:')}") from None
        raise ConfigError(f"command line: {line}") from None
