"""Send a plan to its gateway: one QoS 1 schedule on ``der/<device_id>/battery/setpoint``.

The client comes from the gateway's own MQTT module (same ``MQTT_*`` settings, TLS and
credentials). The schedule is retained so a gateway that connects after the plan was made
still receives the plan in force; the gateway refuses a retained schedule once it has ended.
"""

from __future__ import annotations

import json
import time
import uuid

from paho.mqtt import client as mqtt

from cloud.optimization.model import DispatchError
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.link import make_client
from edge_gateway.mqtt.settings import MqttSettings


class PublishFailed(DispatchError):
    """The broker could not be reached or did not acknowledge the schedule."""


def publish_schedule(settings: MqttSettings, device_id: str, schedule: dict, timeout_s: float = 10.0) -> str:
    """Publish and wait for the broker's acknowledgement; returns the topic."""
    topic = topics.setpoint(device_id)
    client = make_client(settings, f"der-optimizer-{uuid.uuid4().hex[:12]}")
    client.connect_timeout = timeout_s
    try:
        client.connect(settings.host, settings.port, keepalive=max(10, int(timeout_s) * 2))
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise PublishFailed(f"MQTT broker {settings.address} unreachable ({reason}); set MQTT_HOST/MQTT_PORT") from None
    client.loop_start()
    try:
        info = client.publish(topic, json.dumps(schedule), qos=1, retain=True)
        deadline = time.monotonic() + timeout_s
        while not info.is_published() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not info.is_published():
            raise PublishFailed(f"MQTT broker {settings.address} did not acknowledge the schedule within {timeout_s:g}s")
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishFailed(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}")
    finally:
        client.disconnect()
        client.loop_stop()
    return topic
