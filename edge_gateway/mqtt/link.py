"""The gateway's MQTT connection: telemetry out (a gateway sink), battery setpoints in;
Home Assistant's energy meters, next action and manual controls (a gateway observer).

One client per gateway process (``--sites N`` shares it). paho runs the network loop and
reconnects with exponential backoff; one sender thread of ours hands telemetry to it, so the
gateway's step never waits on the network. paho takes its own lock around acknowledgements
and calls ``on_publish`` while holding it, so ours is never held while calling ``publish``:
acknowledged message ids go through a queue that the sender drains.

No message may stop the link: every paho callback of ours logs what it did not expect and
returns (paho would otherwise let the exception end its network thread), and a supervisor
thread checks every ``supervise_s`` that the network and sender threads still run, and
restarts a dead one; a dead network thread gets a new client, because the old one's state is
unknown after a crash.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from der_core import der_data as dd
from der_core.config import SimulatorConfig
from edge_gateway.energy import EnergyMeters
from edge_gateway.mqtt import topics
from edge_gateway.mqtt.commands import CommandRejected, SetpointBook, excerpt
from edge_gateway.mqtt.controls import Override
from edge_gateway.mqtt.delivery import Delivery, Item, WatermarkFile
from edge_gateway.mqtt.next_action import next_action
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


def _guarded(callback: Callable) -> Callable:
    """A paho callback that never raises into paho and ignores a replaced client's late calls."""

    @functools.wraps(callback)
    def call(self: MqttLink, client: mqtt.Client, *args: object) -> None:
        if client is not self._client:
            return
        try:
            callback(self, client, *args)
        except Exception as error:  # a bug here must not end the network thread
            log.error("MQTT: %s failed: %s", callback.__name__.strip("_"), _described(error), exc_info=log.isEnabledFor(logging.DEBUG))

    return call


def _manual_state(override: Override) -> str:
    """The number's state: the manual power, or Home Assistant's "unknown" (``None``, its
    ``payload_reset``) while no manual power is in force."""
    return "None" if math.isnan(override.power_kw) else f"{override.power_kw:.3f}".rstrip("0").rstrip(".")


def _described(error: BaseException, limit: int = 200) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + "..."


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
        self._kept_lock = threading.Lock()
        self._kept: dict[str, str] = {}  # the latest retained state per topic, sent again on every connect
        self.client_id = f"der-gateway-{self.gateway_id}"
        self._send_lock = threading.Lock()  # a client is never replaced while the sender publishes on it
        self._client = self._new_client()
        self._sender = self._new_thread(self._send_loop, "mqtt-sender")
        self._supervisor = self._new_thread(self._supervise_loop, "mqtt-supervisor")

    def _new_client(self) -> mqtt.Client:
        client = make_client(self.settings, self.client_id)
        client.will_set(topics.status(self.gateway_id), topics.OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    @staticmethod
    def _new_thread(target: Callable[[], None], name: str) -> threading.Thread:
        return threading.Thread(target=target, name=name, daemon=True)

    def _connect(self) -> None:
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()

    # --- lifecycle ---
    def start(self) -> MqttLink:
        """Connect in the background: a broker that is down now is retried with backoff."""
        log.info("MQTT: connecting to %s as %s", self.settings.address, self.client_id)
        self._connect()
        self._sender.start()
        self._supervisor.start()
        return self

    def close(self) -> None:
        """Send what is queued (bounded by ``stop_timeout_s``), say offline, disconnect cleanly."""
        if self.connected.is_set():
            self.wait_settled(self.settings.stop_timeout_s)
        self._stopping.set()
        self._wake.set()
        if self._supervisor.is_alive():
            self._supervisor.join()  # it must not replace the client while this stops it
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

    # --- supervision ---
    def dead_threads(self) -> list[str]:
        """The link's threads that have stopped although the link has not been closed."""
        if self._stopping.is_set():
            return []
        # paho's loop_start thread clears Client._thread when loop_forever ends (client.py, _thread_main).
        network = getattr(self._client, "_thread", None)
        dead = [] if network is not None and network.is_alive() else ["network"]
        return dead + ([] if self._sender.is_alive() else ["sender"])

    def supervise(self) -> list[str]:
        """Restart whichever thread has died; return their names."""
        dead = self.dead_threads()
        if "network" in dead:
            log.error("MQTT: the network thread has stopped; reconnecting to %s with a new client", self.settings.address)
            self._replace_client()
        if "sender" in dead:
            log.error("MQTT: the sender thread has stopped; starting it again")
            self._sender = self._new_thread(self._send_loop, "mqtt-sender")
            self._sender.start()
        return dead

    def _replace_client(self) -> None:
        with self._send_lock:
            old = self._client
            try:
                old.disconnect()  # a clean DISCONNECT when the socket still works, so no last will
                old.loop_stop()
            except Exception as error:  # a broken client may fail to close: it is dropped either way
                log.warning("MQTT: closing the old client failed: %s", _described(error))
            self.connected.clear()
            self.subscribed.clear()
            with self._lock:
                self._drain_acks()
                # The new client numbers its messages afresh: what the old one had in flight is
                # resent from the store (or dropped with a warning when there is none).
                self._delivery.forget_in_flight()
            self._client = self._new_client()
            self._connect()

    def _supervise_loop(self) -> None:
        while not self._stopping.wait(self.settings.supervise_s):
            try:
                self.supervise()
            except Exception as error:  # the supervisor outlives a failed restart and tries again
                log.error("MQTT: restarting a stopped thread failed: %s", _described(error), exc_info=log.isEnabledFor(logging.DEBUG))

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
        with self._send_lock:
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
    @_guarded
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
            manual = self.setpoints.manual_limits.get(device_id)
            for topic, config in topics.discovery_configs(device_id, marks, 3 * self.interval_s, manual).items():
                client.publish(topic, json.dumps(config), qos=1, retain=True)
        with self._kept_lock:
            kept = dict(self._kept)
        for topic, payload in kept.items():
            client.publish(topic, payload, qos=1, retain=True)
        now = self.setpoints.now()
        for device_id in self.devices:
            self._announce(device_id, now, client)
        controlled = [d for d in self.devices if d in self.setpoints.manual_limits]
        manual = [topics.command(t(d)) for d in controlled for t in (topics.mode, topics.manual_kw)]
        client.subscribe([(topics.setpoint(d), 1) for d in self.devices] + [(t, 1) for t in manual])
        self.connected.set()
        self._wake.set()

    @_guarded
    def _on_connect_fail(self, _client, _userdata) -> None:
        self._failed_attempts += 1
        level = logging.WARNING if self._failed_attempts == 1 else logging.DEBUG
        log.log(level, "MQTT broker %s unreachable; retrying every %g to %gs", self.settings.address, self.settings.reconnect_min_s, self.settings.reconnect_max_s)

    @_guarded
    def _on_disconnect(self, _client, _userdata, _flags, reason, _properties) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("MQTT: lost the connection to %s (%s); readings are queued and sent when it returns", self.settings.address, reason)

    @_guarded
    def _on_publish(self, _client, _userdata, mid, _reason, _properties) -> None:
        self._acks.put(mid)
        self._wake.set()

    @_guarded
    def _on_subscribe(self, *_args) -> None:
        self.subscribed.set()

    @_guarded
    def _on_message(self, client, _userdata, message) -> None:
        found = topics.command_of(message.topic)
        if found is None or found[0] not in self.devices:
            return
        device_id, which = found
        if which != topics.SETPOINT:
            self._manual(client, device_id, which, message.payload)
            return
        try:
            command = self.setpoints.accept(device_id, message.payload, retained=bool(message.retain))
        except CommandRejected as error:
            log.warning("%s: setpoint refused: %s", device_id, error)
            self._refuse(client, device_id, message.payload, str(error))
            return
        except Exception as error:  # a gap in validation: the command is not applied, and the sender is told
            log.error("%s: setpoint could not be checked: %s", device_id, _described(error), exc_info=log.isEnabledFor(logging.DEBUG))
            self._refuse(client, device_id, message.payload, f"the gateway could not check this command ({type(error).__name__}); it was not applied")
            return
        self._announce(device_id, self.setpoints.now(), client)
        if command is None:
            log.info("%s: setpoint cleared by an empty message; the battery runs its own rule", device_id)
            return
        first = command.segments[0]
        log.info("%s: setpoint accepted: %d segment(s) from %s, first %.3g kW", device_id, len(command.segments), dd.format_ts(first.start), first.power_kw)

    def _manual(self, client: mqtt.Client, device_id: str, which: str, payload: bytes) -> None:
        """A mode or manual setpoint from Home Assistant: applied and echoed on its state
        topics, or refused with one warning line and nothing changed."""
        apply = self.setpoints.set_mode if which == topics.MODE_SET else self.setpoints.set_manual_kw
        try:
            override = apply(device_id, payload)
        except CommandRejected as error:
            log.warning("%s: %s refused: %s", device_id, "battery mode" if which == topics.MODE_SET else "manual setpoint", error)
            return
        log.info("%s: battery mode %s%s", device_id, override.mode, "" if math.isnan(override.power_kw) else f" at {override.power_kw:g} kW")
        self._announce(device_id, self.setpoints.now(), client)

    def _announce(self, device_id: str, at: pd.Timestamp, client: mqtt.Client | None = None) -> None:
        """Publish the device's next action, and its manual controls' states where it has them."""
        self._retain(topics.next_action(device_id), json.dumps(next_action(self.setpoints, device_id, at)), client)
        if device_id in self.setpoints.manual_limits:
            override = self.setpoints.override(device_id)
            self._retain(topics.mode(device_id), override.mode, client)
            self._retain(topics.manual_kw(device_id), _manual_state(override), client)

    def stepped(self, device_id: str, at: pd.Timestamp, meters: EnergyMeters) -> None:
        """The gateway's observer: a step of ``device_id`` at ``at`` is saved with these meters."""
        state = {key: round(value, 6) for key, value in meters.to_dict().items()} | {"ts": dd.format_ts(at)}
        self._retain(topics.energy(device_id), json.dumps(state))
        self._announce(device_id, at)

    def _retain(self, topic: str, payload: str, client: mqtt.Client | None = None) -> None:
        """Keep ``payload`` as the topic's state and publish it retained when connected (a
        connection made later sends it then). Callbacks pass their own client: taking the
        send lock on the network thread could wait on a replacement that waits on it."""
        with self._kept_lock:
            self._kept[topic] = payload
        if client is not None:
            client.publish(topic, payload, qos=1, retain=True)
            return
        if self.connected.is_set():
            with self._send_lock:
                self._client.publish(topic, payload, qos=1, retain=True)

    def _refuse(self, client: mqtt.Client, device_id: str, payload: bytes, reason: str) -> None:
        body = {"device_id": device_id, "error": reason, "payload": excerpt(payload), "received_at": dd.format_ts(dd.utc_now())}
        client.publish(topics.setpoint_error(device_id), json.dumps(body), qos=1)
