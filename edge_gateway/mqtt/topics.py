"""Topic names and Home Assistant discovery configs (DESIGN.md, "MQTT topics").

Discovery follows Home Assistant's MQTT discovery convention: one retained config per entity
under ``homeassistant/<component>/<node_id>/<object_id>/config``. The power sensors read their
value out of the telemetry JSON, so the gateway publishes each reading once and Home
Assistant picks the fields it shows; the energy meters, the next action and the manual
controls' states are retained messages of their own, so Home Assistant has them at once
after a restart. The manual controls (a ``select`` for the mode, a ``number`` for the
setpoint) exist for batteries in ``setpoint`` mode only: the others run their own rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from der_core import der_data as dd
from edge_gateway.mqtt.controls import ACTIONS, MANUAL_STEP_KW, MODES, ManualLimits

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


def energy(device_id: str) -> str:
    return f"der/{device_id}/energy"


def next_action(device_id: str) -> str:
    return f"der/{device_id}/next_action"


def mode(device_id: str) -> str:
    return f"der/{device_id}/battery/mode"


def manual_kw(device_id: str) -> str:
    return f"der/{device_id}/battery/manual_kw"


def command(state_topic: str) -> str:
    """The command topic of a manual control's state topic."""
    return f"{state_topic}/set"


SETPOINT, MODE_SET, MANUAL_SET = "setpoint", "mode/set", "manual_kw/set"


def device_of_setpoint(topic: str) -> str | None:
    """The device id of a ``der/<id>/battery/setpoint`` topic, else None."""
    found = command_of(topic)
    return found[0] if found is not None and found[1] == SETPOINT else None


def command_of(topic: str) -> tuple[str, str] | None:
    """(device id, which) of a command topic: ``der/<id>/battery/`` then ``setpoint``,
    ``mode/set`` or ``manual_kw/set``; None for any other topic."""
    parts = topic.split("/")
    if len(parts) in (4, 5) and parts[0] == "der" and parts[2] == "battery":
        which = "/".join(parts[3:])
        if which in (SETPOINT, MODE_SET, MANUAL_SET):
            return parts[1], which
    return None


def state_topics(device_id: str) -> list[str]:
    """Every topic the gateway retains for a device besides discovery."""
    return [status(device_id), energy(device_id), next_action(device_id), mode(device_id), manual_kw(device_id)]


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


@dataclass(frozen=True)
class EnergySensor:
    key: str
    name: str
    field: str  # of edge_gateway.energy.EnergyMeters


# Home Assistant's Energy dashboard takes energy sensors in kWh that only grow (total_increasing).
ENERGY_SENSORS: tuple[EnergySensor, ...] = (
    EnergySensor("grid_import_energy", "Grid import energy", "grid_import_kwh"),
    EnergySensor("grid_export_energy", "Grid export energy", "grid_export_kwh"),
    EnergySensor("solar_energy", "Solar energy", "pv_kwh"),
    EnergySensor("battery_charge_energy", "Battery charge energy", "battery_charge_kwh"),
    EnergySensor("battery_discharge_energy", "Battery discharge energy", "battery_discharge_kwh"),
)
NEXT_ACTION, MODE, MANUAL_SETPOINT = "next_action", "battery_mode", "manual_setpoint"


def discovery_topic(device_id: str, sensor: Sensor | EnergySensor | str, component: str = "sensor") -> str:
    key = sensor if isinstance(sensor, str) else sensor.key
    return f"{DISCOVERY_PREFIX}/{component}/{node_id(device_id)}/{key}/config"


def all_discovery_topics(device_id: str) -> list[str]:
    """Every discovery topic the gateway may publish for a device, whatever its battery mode."""
    sensors = [discovery_topic(device_id, s) for s in (*SENSORS, *ENERGY_SENSORS)] + [discovery_topic(device_id, NEXT_ACTION)]
    return sensors + [discovery_topic(device_id, MODE, "select"), discovery_topic(device_id, MANUAL_SETPOINT, "number")]


def discovery_configs(device_id: str, availability: list[str], expire_after_s: int | None = None,
                      manual: ManualLimits | None = None) -> dict[str, dict]:
    """Retained discovery config per entity topic for one device; the manual controls only
    with the battery's rates (``manual``: a battery that follows commands)."""
    device = {
        "identifiers": [f"der_{node_id(device_id)}"],
        "name": f"DER gateway {device_id}",
        "manufacturer": "predictive-optimization-der",
        "model": "edge gateway (simulated site)",
    }

    def entity(key: str, name: str) -> dict:
        return {
            "name": name,
            "unique_id": f"der_{node_id(device_id)}_{key}",
            "object_id": f"der_{node_id(device_id)}_{key}",
            "availability": [{"topic": t} for t in availability],
            "availability_mode": "all",
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": device,
        }

    configs = {}
    for sensor in SENSORS:
        config = entity(sensor.key, sensor.name) | {
            "state_topic": telemetry(device_id),
            "value_template": "{{ " + _json_path(sensor.column) + " }}",
            "unit_of_measurement": sensor.unit,
            "state_class": sensor.state_class,
        }
        if sensor.device_class:
            config["device_class"] = sensor.device_class
        if expire_after_s:
            config["expire_after"] = expire_after_s
        configs[discovery_topic(device_id, sensor)] = config
    for meter in ENERGY_SENSORS:
        configs[discovery_topic(device_id, meter)] = entity(meter.key, meter.name) | {
            "state_topic": energy(device_id),
            "value_template": "{{ value_json." + meter.field + " }}",
            "unit_of_measurement": "kWh",
            "device_class": "energy",
            "state_class": "total_increasing",
            "suggested_display_precision": 2,
        }
    configs[discovery_topic(device_id, NEXT_ACTION)] = entity(NEXT_ACTION, "Battery next action") | {
        "state_topic": next_action(device_id),
        "value_template": "{{ value_json.state }}",
        "json_attributes_topic": next_action(device_id),
        "json_attributes_template": "{{ value_json.attributes | tojson }}",
        "device_class": "enum",
        "options": list(ACTIONS),
        "icon": "mdi:battery-clock",
    }
    if manual is None:
        return configs
    configs[discovery_topic(device_id, MODE, "select")] = entity(MODE, "Battery mode") | {
        "state_topic": mode(device_id),
        "command_topic": command(mode(device_id)),
        "options": list(MODES),
        "icon": "mdi:battery-sync",
    }
    configs[discovery_topic(device_id, MANUAL_SETPOINT, "number")] = entity(MANUAL_SETPOINT, "Battery manual setpoint") | {
        "state_topic": manual_kw(device_id),
        "command_topic": command(manual_kw(device_id)),
        "min": manual.low_kw,
        "max": manual.high_kw,
        "step": MANUAL_STEP_KW,
        "unit_of_measurement": "kW",
        "device_class": "power",
        "mode": "box",
    }
    return configs
