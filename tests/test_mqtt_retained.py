"""One retained message sent and acknowledged: it reaches a subscriber that comes later, and
each way it can fail is one clear error."""

from __future__ import annotations

import socket
import threading

import pytest

from edge_gateway.mqtt.retained import NotPublished, publish_retained, replace_retained
from edge_gateway.mqtt.settings import MqttSettings
from tests.mqtt_fixtures import Recorder, broker, clear_retained, unique_id  # noqa: F401


def test_an_unreachable_broker_is_one_clear_error():
    with pytest.raises(NotPublished, match=r"^MQTT broker 127\.0\.0\.1:1 unreachable \(.+\); set MQTT_HOST/MQTT_PORT$"):
        publish_retained(MqttSettings(host="127.0.0.1", port=1), "der/x/battery/setpoint", "{}", timeout_s=2)


def test_a_server_that_never_acknowledges_is_one_clear_error():
    """A TCP server that takes the connection and never answers, as a stalled broker does."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        taken = []

        def take() -> None:
            connection, _ = server.accept()
            taken.append(connection)
            try:
                while connection.recv(4096):
                    pass
            except OSError:  # the test closed the connection under it: the stalled broker is gone
                pass

        threading.Thread(target=take, daemon=True).start()
        settings = MqttSettings(host="127.0.0.1", port=server.getsockname()[1])
        try:
            with pytest.raises(NotPublished, match=r"^MQTT broker 127\.0\.0\.1:\d+ did not acknowledge the schedule within 0\.5s$"):
                publish_retained(settings, "der/x/battery/setpoint", "{}", what="the schedule", timeout_s=0.5)
        finally:
            for connection in taken:
                connection.close()


@pytest.mark.mqtt
def test_a_retained_message_reaches_a_subscriber_that_comes_later(broker):  # noqa: F811
    topic = f"test/{unique_id('retained')}"
    publish_retained(broker, topic, '{"schedule": []}')
    recorder = Recorder(broker, [topic])
    try:
        assert recorder.wait_for(lambda: recorder.on(topic)), "the retained message did not arrive"
        message = recorder.on(topic)[0]
        assert (message.payload, message.retain, message.qos) == (b'{"schedule": []}', True, 1)
    finally:
        recorder.close()
        clear_retained(broker, [topic])


@pytest.mark.mqtt
def test_replacing_a_retained_message_returns_the_one_it_replaced(broker):  # noqa: F811
    topic = f"test/{unique_id('replace')}"
    try:
        assert replace_retained(broker, topic, b"first") is None  # nothing retained before
        assert replace_retained(broker, topic, b"second") == b"first"
        assert replace_retained(broker, topic, b"third") == b"second"
    finally:
        clear_retained(broker, [topic])
