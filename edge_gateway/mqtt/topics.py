"""Topic names and Home Assistant discovery configs (DESIGN.md, "MQTT topics").

Discovery follows Home Assistant's MQTT discovery convention: one retained config per sensor
under ``homeassistant/sensor/<node_id>/<object_id>/config``, every sensor reading its value
out of the telemetry JSON, so the gateway publishes each reading once and Home Assistant
picks the fields it shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from der_core import der_data as dd

DISCOVERY_PREFIX = "homeassistant"
ONLINE, OFFLINE = "online", "offline"


def telemetry(device_id: str) -> str:
    return f"der/{device_id}/telemetry"


def status(device_id: str) -> str:
    return f"der/{device_id}/status"


def setpoint(device_id: str) -> str:
    return f"der/{device_id}/battery/setpoint"


def setpoint_error(device_id: str) -> str:
    return f"{setpoint(device_id)}/error"


def device_of_setpoint(topic: str) -> str | None:
    """The device id of a ``der/<id>/battery/setpoint`` topic, else None."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "der" and parts[2:] == ["battery", "setpoint"]:
        return parts[1]
    return None


def node_id(device_id: str) -> str:
    # Home Assistant accepts only [a-zA-Z0-9_-] in discovery node ids; device ids may hold '.' or ':'.
    return re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def _json_path(flat: str) -> str:
    """``value_json`` path of a flat column, derived from the contract rather than spelled here."""
    for group, fields in dd.GROUPS.items():
        for field in fields:
            if dd.flat_name(group, field) == flat:
                return f"value_json.{group}.{field}"
    return f"value_json.{flat}"


@dataclass(frozen=True)
class Sensor:
    key: str
    name: str
    column: str
    unit: str
    device_class: str | None
    state_class: str


SENSORS: tuple[Sensor, ...] = (
    Sensor("solar_power", "Solar power", dd.SOLAR_KW, "kW", "power", "measurement"),
    Sensor("load_power", "Home load", dd.LOAD_TOTAL, "kW", "power", "measurement"),
    Sensor("battery_soc", "Battery state of charge", dd.BATTERY_SOC, "%", "battery", "measurement"),
    Sensor("battery_power", "Battery power", dd.BATTERY_POWER, "kW", "power", "measurement"),
    Sensor("grid_power", "Grid power", dd.NET_GRID_FLOW, "kW", "power", "measurement"),
    # Home Assistant's "monetary" class means an amount of money (state_class total); a tariff is
    # a rate that goes up and down, so it is a plain measurement without a device class.
    Sensor("price", "Grid price", dd.PRICE, "$/kWh", None, "measurement"),
)


def discovery_topic(device_id: str, sensor: Sensor) -> str:
    return f"{DISCOVERY_PREFIX}/sensor/{node_id(device_id)}/{sensor.key}/config"


def discovery_configs(device_id: str, availability: list[str], expire_after_s: int | None = None) -> dict[str, dict]:
    """Retained discovery config per sensor topic for one device."""
    device = {
        "identifiers": [f"der_{node_id(device_id)}"],
        "name": f"DER gateway {device_id}",
        "manufacturer": "predictive-optimization-der",
        "model": "edge gateway (simulated site)",
    }
    configs = {}
    for sensor in SENSORS:
        config = {
            "name": sensor.name,
            "unique_id": f"der_{node_id(device_id)}_{sensor.key}",
            "object_id": f"der_{node_id(device_id)}_{sensor.key}",
            "state_topic": telemetry(device_id),
            "value_template": "{{ " + _json_path(sensor.column) + " }}",
            "unit_of_measurement": sensor.unit,
            "state_class": sensor.state_class,
            "availability": [{"topic": t} for t in availability],
            "availability_mode": "all",
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": device,
        }
        if sensor.device_class:
            config["device_class"] = sensor.device_class
        if expire_after_s:
            config["expire_after"] = expire_after_s
        configs[discovery_topic(device_id, sensor)] = config
    return configs
