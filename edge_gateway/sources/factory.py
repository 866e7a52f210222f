"""The one place a gateway's reading source is chosen from its configuration."""

from __future__ import annotations

from der_core.config import ModbusSunSpecSource, SimulatorConfig
from edge_gateway.sources.base import DeviceSource


def open_source(config: SimulatorConfig) -> DeviceSource | None:
    """The configured measured source, or None for the simulator."""
    if isinstance(config.source, ModbusSunSpecSource):
        # imported here: the Modbus client loads only for a gateway that reads a device
        from edge_gateway.sources.modbus_sunspec import SunSpecDevice

        return SunSpecDevice(config.source, soc_window=(config.battery.min_soc, config.battery.max_soc))
    return None
