"""The one place a gateway's reading source is chosen from its configuration.

Each opener imports its adapter when called, so a gateway loads only its own device's client
(pymodbus, paho, httpx)."""

from __future__ import annotations

from collections.abc import Callable

from der_core.config import SimulatorConfig
from edge_gateway.sources.base import DeviceSource


def _modbus_sunspec(config: SimulatorConfig) -> DeviceSource:
    from edge_gateway.sources.modbus_sunspec import SunSpecDevice

    return SunSpecDevice(config.source, soc_window=(config.battery.min_soc, config.battery.max_soc),
                         rates_kw=(config.battery.max_charge_rate_kw, config.battery.max_discharge_rate_kw))


def _mqtt(config: SimulatorConfig) -> DeviceSource:
    from edge_gateway.sources.mqtt_bridge import MqttBridge

    return MqttBridge(config.source, config.battery, config.device_id)


def _homeassistant(config: SimulatorConfig) -> DeviceSource:
    from edge_gateway.sources.homeassistant import HomeAssistantDevice

    return HomeAssistantDevice(config.source, config.battery)


#: The adapter of each measured ``source.kind``; the simulator has none.
OPENERS: dict[str, Callable[[SimulatorConfig], DeviceSource]] = {
    "modbus-sunspec": _modbus_sunspec,
    "mqtt": _mqtt,
    "homeassistant": _homeassistant,
}


def open_source(config: SimulatorConfig) -> DeviceSource | None:
    """The configured measured source, or None for the simulator."""
    opener = OPENERS.get(config.source.kind)
    return None if opener is None else opener(config)
