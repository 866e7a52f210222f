"""The gateway's MQTT connection: telemetry out (a gateway sink), battery setpoints in.

One client per gateway process (``--sites N`` shares it). paho runs the network loop and
reconnects with exponential backoff; one sender thread of ours hands telemetry to it, so the
gateway's step never waits on the network. paho takes its own lock around acknowledgements
and calls ``on_publish`` while holding it, so ours is never held while calling ``publish``:
acknowledged message ids go through a queue that the sender drains.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_gateway.config import SimulatorConfig
from edge_gateway.models import der_data as dd
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.commands import CommandRejected, SetpointBook, excerpt
from edge_gateway.mqtt.delivery import Delivery, Item, WatermarkFile
from edge_gateway.mqtt.settings import MqttSettings
from edge_gateway.stores.base import EdgeStore

log = logging.getLogger(__name__)


def micros(stamps) -> list[int]:
    return pd.DatetimeIndex(stamps).tz_convert("UTC").as_unit("us").asi8.tolist()


def make_client(settings: MqttSettings, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file)
    client.reconnect_delay_set(min_delay=max(1, round(settings.reconnect_min_s)), max_delay=max(1, round(settings.reconnect_max_s)))
    return client


class MqttLink:
    """Publisher sink and setpoint subscriber for the sites of one gateway."""

    def __init__(
        self,
        settings: MqttSettings,
        configs: Sequence[SimulatorConfig],
        *,
        gateway_id: str | None = None,
        setpoints: SetpointBook | None = None,
        reader: EdgeStore | None = None,
        watermark_path: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.devices = [c.device_id for c in configs]
        self.gateway_id = gateway_id or self.devices[0]
        self.setpoints = setpoints if setpoints is not None else SetpointBook.for_configs(configs)
        self.reader = reader
        self.interval_s = configs[0].interval_seconds
        self._marks = WatermarkFile(watermark_path) if watermark_path else None
        self._delivery = Delivery(settings.queue_size, self._marks.load() if self._marks else {}, can_replay=reader is not None)
        self._lock = threading.Lock()
        self._pumping = False  # the sender holds readings taken off the queue but not yet handed to paho
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # setpoint topics acknowledged: commands from now on arrive
        self._failed_attempts = 0
        self.client_id = f"der-gateway-{self.gateway_id}"
        self._client = make_client(settings, self.client_id)
        self._client.will_set(topics.status(self.gateway_id), topics.OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = lambda _c, _u, mid, _rc, _p: (self._acks.put(mid), self._wake.set())
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    # --- lifecycle ---
    def start(self) -> MqttLink:
        """Connect in the background: a broker that is down now is retried with backoff."""
        log.info("MQTT: connecting to %s as %s", self.settings.address, self.client_id)
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()
        self._sender.start()
        return self

    def close(self) -> None:
        """Send what is queued (bounded by ``stop_timeout_s``), say offline, disconnect cleanly."""
        if self.connected.is_set():
            self.wait_settled(self.settings.stop_timeout_s)
        self._stopping.set()
        self._wake.set()
        self._sender.join(timeout=self.settings.stop_timeout_s)
        with self._lock:
            self._drain_acks()
            left = len(self._delivery.queue) + self._delivery.in_flight()
            if self._marks:
                self._marks.save(self._delivery.watermarks())
        if left:
            log.warning("MQTT: stopping with %d reading(s) unacknowledged; they stay in the edge store and are sent after the next start", left)
        if self.connected.is_set():
            infos = [self._client.publish(t, topics.OFFLINE, qos=1, retain=True) for t in self.status_topics()]
            for info in infos:
                try:
                    info.wait_for_publish(timeout=self.settings.stop_timeout_s)
                except (RuntimeError, ValueError) as error:
                    log.warning("MQTT: could not publish offline status (%s)", error)
        self._client.disconnect()
        self._client.loop_stop()
        log.info("MQTT: disconnected from %s", self.settings.address)

    def __enter__(self) -> MqttLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status_topics(self) -> list[str]:
        return list(dict.fromkeys([topics.status(self.gateway_id)] + [topics.status(d) for d in self.devices]))

    # --- the sink ---
    def __call__(self, frame: pd.DataFrame) -> None:
        items = [Item(r[dd.DEVICE_ID], ts, json.dumps(r)) for r, ts in zip(dd.frame_to_nested(frame), micros(frame[dd.TS]))]
        with self._lock:
            for item in items:
                self._delivery.enqueue(item)
        self._wake.set()

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until every reading handed over is acknowledged (for ``--once`` and tests)."""
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                with self._lock:
                    self._drain_acks()
                    if not self._pumping and self._delivery.settled():
                        return True
                self._wake.set()
                deadline.wait(0.05)
            return False
        finally:
            timer.cancel()

    def watermarks(self) -> dict[str, int | None]:
        with self._lock:
            self._drain_acks()
            return self._delivery.watermarks()

    # --- sender thread ---
    def _drain_acks(self) -> None:
        while True:
            try:
                self._delivery.acked(self._acks.get_nowait())
            except queue.Empty:
                return

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._pump()
            except Exception as error:  # the link must outlive one bad round (a store read, a codec error)
                log.error("MQTT: sending failed: %s", error, exc_info=log.isEnabledFor(logging.DEBUG))

    def _room(self) -> int:
        with self._lock:
            self._drain_acks()
            return self.settings.inflight_window - self._delivery.in_flight()

    def _pump(self) -> None:
        with self._lock:
            self._pumping = True
        try:
            if self.connected.is_set():
                self._replay()
                while self._room() > 0 and not self._stopping.is_set():
                    with self._lock:
                        item = self._delivery.next_queued()
                    if item is None:
                        break
                    self._publish(item)
        finally:
            with self._lock:
                self._pumping = False
        if self._marks:
            with self._lock:
                marks = self._delivery.watermarks()
            self._marks.save(marks)

    def _publish(self, item: Item) -> None:
        info = self._client.publish(topics.telemetry(item.device_id), item.payload, qos=1)
        with self._lock:
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self._delivery.requeue_front(item)
            else:  # MQTT_ERR_NO_CONN too: paho keeps the message and sends it after reconnecting
                self._delivery.sent(item, info.mid)

    def _replay(self) -> None:
        """Send what only the edge store holds: readings dropped from memory or left by a previous run."""
        with self._lock:
            due = self._delivery.replays_due()
        for device_id, start_us in due:
            room = self._room()
            if room <= 0 or self.reader is None:
                return
            frame = self.reader.read_range(device_id, pd.Timestamp(start_us, unit="us", tz="UTC"), None, limit=room)
            stamps = micros(frame[dd.TS])
            for reading, ts in zip(dd.frame_to_nested(frame), stamps):
                item = Item(device_id, ts, json.dumps(reading))
                with self._lock:
                    wanted = self._delivery.needs_send(device_id, ts)
                if wanted:
                    self._publish(item)
            with self._lock:
                self._delivery.replay_done(device_id, stamps[-1] if len(stamps) == room else None)
            log.info("MQTT: %s: resent %d stored reading(s)", device_id, len(stamps))

    # --- paho callbacks (network thread) ---
    def _on_connect(self, client, _userdata, _flags, reason, _properties) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.settings.address, reason)
            return
        self._failed_attempts = 0
        log.info("MQTT: connected to %s", self.settings.address)
        for topic in self.status_topics():
            client.publish(topic, topics.ONLINE, qos=1, retain=True)
        availability = list(dict.fromkeys([topics.status(self.gateway_id)]))
        for device_id in self.devices:
            marks = list(dict.fromkeys([topics.status(device_id)] + availability))
            for topic, config in topics.discovery_configs(device_id, marks, expire_after_s=3 * self.interval_s).items():
                client.publish(topic, json.dumps(config), qos=1, retain=True)
        client.subscribe([(topics.setpoint(d), 1) for d in self.devices])
        self.connected.set()
        self._wake.set()

    def _on_connect_fail(self, _client, _userdata) -> None:
        self._failed_attempts += 1
        level = logging.WARNING if self._failed_attempts == 1 else logging.DEBUG
        log.log(level, "MQTT broker %s unreachable; retrying with backoff up to %gs", self.settings.address, self.settings.reconnect_max_s)

    def _on_disconnect(self, _client, _userdata, _flags, reason, _properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("MQTT: lost the connection to %s (%s); readings are queued and sent when it returns", self.settings.address, reason)

    def _on_message(self, client, _userdata, message) -> None:
        device_id = topics.device_of_setpoint(message.topic)
        if device_id is None or device_id not in self.devices:
            return
        try:
            command = self.setpoints.accept(device_id, message.payload, retained=bool(message.retain))
        except CommandRejected as error:
            log.warning("%s: setpoint refused: %s", device_id, error)
            body = {"device_id": device_id, "error": str(error), "payload": excerpt(message.payload), "received_at": dd.format_ts(dd.utc_now())}
            client.publish(topics.setpoint_error(device_id), json.dumps(body), qos=1)
            return
        first = command.segments[0]
        log.info("%s: setpoint accepted: %d segment(s) from %s, first %.3g kW", device_id, len(command.segments), dd.format_ts(first.start), first.power_kw)
