"""One retained QoS 1 message, sent on a short connection of its own and acknowledged by the
broker: for a job that publishes and exits (the optimizer's schedule), where the gateway's
long-lived link (:mod:`edge_gateway.mqtt.link`) would be too much; and the same, returning the
retained message it replaced, for a sender that may have to put it back (a demand-response
event's schedule).

The client is the gateway's (:func:`~edge_gateway.mqtt.link.make_client`: the same ``MQTT_*``
settings, TLS and credentials); paho's errors come back as :class:`NotPublished`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty, Queue

from paho.mqtt import client as mqtt

from der_core.errors import DERError
from edge_gateway.mqtt.link import make_client
from edge_gateway.mqtt.settings import MqttSettings


class NotPublished(DERError):
    """The broker could not be reached, did not acknowledge the message, or refused it."""


@contextmanager
def _connected(settings: MqttSettings, client_name: str, timeout_s: float) -> Iterator[mqtt.Client]:
    """A client connected to the broker with its network loop running, disconnected after."""
    client = make_client(settings, f"{client_name}-{uuid.uuid4().hex[:12]}")
    client.connect_timeout = timeout_s
    try:
        client.connect(settings.host, settings.port, keepalive=max(10, int(timeout_s) * 2))
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise NotPublished(f"MQTT broker {settings.address} unreachable ({reason}); set MQTT_HOST/MQTT_PORT") from None
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def _publish(client: mqtt.Client, settings: MqttSettings, topic: str, payload: str | bytes, what: str,
             timeout_s: float) -> None:
    info = client.publish(topic, payload, qos=1, retain=True)
    try:
        info.wait_for_publish(timeout_s)
        acknowledged = info.is_published()
    except (ValueError, RuntimeError):  # paho's way of saying the message was never queued or sent
        raise NotPublished(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}") from None
    if not acknowledged:
        raise NotPublished(f"MQTT broker {settings.address} did not acknowledge {what} within {timeout_s:g}s")


def publish_retained(settings: MqttSettings, topic: str, payload: str | bytes, *, what: str = "the message",
                     client_name: str = "der-publish", timeout_s: float = 10.0) -> None:
    """Publish ``payload`` retained on ``topic`` and wait up to ``timeout_s`` for the broker's
    acknowledgement; ``what`` names the message in errors."""
    with _connected(settings, client_name, timeout_s) as client:
        _publish(client, settings, topic, payload, what, timeout_s)


def replace_retained(settings: MqttSettings, topic: str, payload: str | bytes, *, what: str = "the message",
                     client_name: str = "der-publish", timeout_s: float = 10.0) -> bytes | None:
    """:func:`publish_retained`, returning the retained message it replaced (None: none).

    The client subscribes to ``topic`` and publishes once the subscription is acknowledged.
    A broker sends a subscription's retained message as it takes the subscription, so before
    it handles the publish that follows: the first message back is the old retained one
    (retain flag set), or, when there was none, this publish forwarded live (flag clear). A
    broker that sends nothing back (a subscription it refused) leaves it unknown: None."""
    first: Queue[mqtt.MQTTMessage] = Queue()
    subscribed = threading.Event()
    with _connected(settings, client_name, timeout_s) as client:
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = lambda _c, _u, message: first.put(message) if message.topic == topic else None
        result, _ = client.subscribe(topic, qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS or not subscribed.wait(timeout_s):
            raise NotPublished(f"MQTT broker {settings.address} did not take a subscription to {topic} "
                               f"within {timeout_s:g}s")
        _publish(client, settings, topic, payload, what, timeout_s)
        try:
            message = first.get(timeout=timeout_s)
        except Empty:  # the message is published (acknowledged); only what it replaced is unknown
            return None
    return bytes(message.payload) if message.retain and message.payload else None
