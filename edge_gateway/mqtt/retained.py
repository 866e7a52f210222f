"""One retained QoS 1 message, sent on a short connection of its own and acknowledged by the
broker: for a job that publishes and exits (the optimizer's schedule), where the gateway's
long-lived link (:mod:`edge_gateway.mqtt.link`) would be too much.

The client is the gateway's (:func:`~edge_gateway.mqtt.link.make_client`: the same ``MQTT_*``
settings, TLS and credentials); paho's errors come back as :class:`NotPublished`.
"""

from __future__ import annotations

import uuid

from paho.mqtt import client as mqtt

from der_core.errors import DERError
from edge_gateway.mqtt.link import make_client
from edge_gateway.mqtt.settings import MqttSettings


class NotPublished(DERError):
    """The broker could not be reached, did not acknowledge the message, or refused it."""


def publish_retained(settings: MqttSettings, topic: str, payload: str | bytes, *, what: str = "the message",
                     client_name: str = "der-publish", timeout_s: float = 10.0) -> None:
    """Publish ``payload`` retained on ``topic`` and wait up to ``timeout_s`` for the broker's
    acknowledgement; ``what`` names the message in errors."""
    client = make_client(settings, f"{client_name}-{uuid.uuid4().hex[:12]}")
    client.connect_timeout = timeout_s
    try:
        client.connect(settings.host, settings.port, keepalive=max(10, int(timeout_s) * 2))
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise NotPublished(f"MQTT broker {settings.address} unreachable ({reason}); set MQTT_HOST/MQTT_PORT") from None
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout_s)
            acknowledged = info.is_published()
        except (ValueError, RuntimeError):  # paho's way of saying the message was never queued or sent
            raise NotPublished(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}") from None
        if not acknowledged:
            raise NotPublished(f"MQTT broker {settings.address} did not acknowledge {what} within {timeout_s:g}s")
    finally:
        client.disconnect()
        client.loop_stop()
