"""MQTT for the edge gateway: telemetry, status and Home Assistant discovery out, battery
setpoint commands in (DESIGN.md, "MQTT topics")."""

from edge_gateway.mqtt.commands import CommandRejected, SetpointBook, parse_command
from edge_gateway.mqtt.link import MqttLink
from edge_gateway.mqtt.settings import MqttSettings, add_mqtt_flags, mqtt_configured, mqtt_settings

__all__ = [
    "CommandRejected",
    "MqttLink",
    "MqttSettings",
    "SetpointBook",
    "add_mqtt_flags",
    "mqtt_configured",
    "mqtt_settings",
    "parse_command",
]
