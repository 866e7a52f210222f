"""MQTT helpers for tests: the real broker of MQTT_HOST/MQTT_PORT, a recording subscriber,
and a private ``mosquitto`` process that a test may stop and start again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_gateway.mqtt import MqttSettings
from tests.conftest import in_ci, require_service

WAIT_S = 10.0


def broker_address() -> tuple[str, int]:
    return os.environ.get("MQTT_HOST") or "127.0.0.1", int(os.environ.get("MQTT_PORT") or 1883)


@pytest.fixture
def broker() -> MqttSettings:
    """Settings for the shared broker; skip (fail under CI=true) when it is not there."""
    host, port = broker_address()
    require_service("MQTT broker", host, port)
    return MqttSettings(host=host, port=port, reconnect_min_s=1, reconnect_max_s=2, stop_timeout_s=5)


def unique_id(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Recorder:
    """A subscriber that keeps every message it receives, for tests to wait on."""

    def __init__(self, settings: MqttSettings, topics: list[str], *, client_id: str | None = None, clean: bool = True) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or unique_id("rec"), clean_session=clean)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S), f"subscriber could not subscribe to {topics}"

    def _on_connect(self, client, _u, _f, reason, _p) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c, _u, message) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._changed:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout=timeout_s)

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(m.payload) for m in self.on(topic)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(settings: MqttSettings, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
    """Publish one message at QoS 1 and wait for the broker's acknowledgement."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_id("pub"))
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


def clear_retained(settings: MqttSettings, topics: list[str]) -> None:
    """An empty retained message deletes the retained one (MQTT 3.1.1, 3.3.1.3)."""
    for topic in topics:
        publish(settings, topic, b"", retain=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mosquitto_binary() -> str:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        message = "mosquitto binary not found; install the mosquitto package"
        pytest.fail(message) if in_ci() else pytest.skip(message)
    return binary


class PrivateBroker:
    """A mosquitto of our own on a spare port, with persistence so a persistent subscriber
    session survives a stop and start (the broker saves its state on SIGTERM)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.config = folder / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""  # as root it would switch to "mosquitto" and lose the folder
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\n{user}log_dest stderr\n"
        )
        self.process: subprocess.Popen | None = None

    @property
    def settings(self) -> MqttSettings:
        return MqttSettings(host="127.0.0.1", port=self.port, reconnect_min_s=1, reconnect_max_s=1, stop_timeout_s=5)

    def start(self) -> None:
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=WAIT_S)
        self.process = None


@contextmanager
def private_broker(folder: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(folder)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
