"""Is the broker there, and does it let us in? For ``--status``: one short connection."""

from __future__ import annotations

import time
import uuid

from paho.mqtt import client as mqtt

from edge_gateway.mqtt.link import make_client
from edge_gateway.mqtt.settings import MqttSettings


def probe_broker(settings: MqttSettings, timeout_s: float = 3.0) -> str | None:
    """None when the broker accepts a connection with these settings, else the reason."""
    client = make_client(settings, f"der-status-{uuid.uuid4().hex[:12]}")
    client.connect_timeout = timeout_s
    outcome: list[str | None] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(str(reason) if reason.is_failure else None)
    try:
        client.connect(settings.host, settings.port, keepalive=max(5, int(timeout_s) + 2))
    except (OSError, ValueError) as error:
        return getattr(error, "strerror", None) or str(error) or type(error).__name__
    deadline = time.monotonic() + timeout_s
    try:
        while not outcome and time.monotonic() < deadline:
            if client.loop(timeout=0.1) not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                return "connection closed by the broker"
        return outcome[0] if outcome else f"no answer within {timeout_s:g}s"
    finally:
        client.disconnect()
