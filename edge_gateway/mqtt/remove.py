"""Remove a device from Home Assistant and the broker: delete every retained message the
gateway left for it, its discovery configs and its state topics.

An empty retained message deletes the retained one (MQTT 3.1.1, 3.3.1.3), and Home Assistant
removes an entity whose discovery config is deleted that way. Deleted are the topics the
gateway publishes for the device (``topics.all_discovery_topics`` and ``topics.state_topics``)
and whatever else is retained under its discovery node or ``der/<device_id>/``, so configs
of entities an older release published go too. The setpoint topic is the plan's, not the
gateway's, and stays. Stop the device's gateway first: it publishes its configs again when it
connects.
"""

from __future__ import annotations

import threading
import time
import uuid

from der_core.errors import DERError
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.link import make_client
from edge_gateway.mqtt.settings import MqttSettings

QUIET_S = 0.5  # retained messages arrive in a burst after subscribing; this long without one ends it


class RemoveFailed(DERError):
    """The broker could not be reached or did not acknowledge the deletions."""


def retained_of(settings: MqttSettings, device_id: str, timeout_s: float = 10.0) -> set[str]:
    """The topics holding a retained message of the device: its discovery node and its own tree."""
    wanted = [f"{topics.DISCOVERY_PREFIX}/+/{topics.node_id(device_id)}/+/config", f"der/{device_id}/#"]
    found: set[str] = set()
    changed, subscribed = threading.Event(), threading.Event()

    def on_message(_c, _u, message) -> None:
        if message.retain and message.payload:
            found.add(message.topic)
        changed.set()

    client = _connected(settings, timeout_s)
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    try:
        client.subscribe([(t, 1) for t in wanted])
        if not subscribed.wait(timeout_s):
            raise RemoveFailed(f"MQTT broker {settings.address} did not acknowledge the subscription within {timeout_s:g}s")
        while changed.wait(QUIET_S):
            changed.clear()
    finally:
        client.disconnect()
        client.loop_stop()
    return {t for t in found if t != topics.setpoint(device_id)}


def remove_device(settings: MqttSettings, device_id: str, timeout_s: float = 10.0) -> int:
    """Delete the device's retained configs and states; return how many topics held one."""
    held = retained_of(settings, device_id, timeout_s)
    targets = sorted(held | set(topics.all_discovery_topics(device_id)) | set(topics.state_topics(device_id)))
    client = _connected(settings, timeout_s)
    try:
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in targets]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise RemoveFailed(f"MQTT broker {settings.address} did not acknowledge the deletions within {timeout_s:g}s")
    finally:
        client.disconnect()
        client.loop_stop()
    return len(held)


def _connected(settings: MqttSettings, timeout_s: float):
    client = make_client(settings, f"der-remove-{uuid.uuid4().hex[:12]}")
    client.connect_timeout = timeout_s
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c, _u, _f, reason, _p) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=max(10, int(timeout_s) * 2))
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise RemoveFailed(f"MQTT broker {settings.address} unreachable ({reason}); set MQTT_HOST/MQTT_PORT") from None
    client.loop_start()
    if not connected.wait(timeout_s) or refused:
        client.disconnect()
        client.loop_stop()
        raise RemoveFailed(f"MQTT broker {settings.address} refused the connection ({refused[0] if refused else 'no answer'})")
    return client
