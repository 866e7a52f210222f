"""A device whose values an MQTT bridge publishes (OpenDTU, Solar Assistant, Zigbee2MQTT, a
vendor's own), read by subscribing to its topics, and its battery told what to do on a
command topic (paho-mqtt 2.x, the gateway's own client settings: ``mqtt.link.make_client``).

Readings: each message is a sample of the fields its topic carries, stamped when it
arrives; a reading averages the powers received in its interval and takes the last state of
charge (:meth:`Measured.mean`). A field with no message in the interval stays empty: a
bridge that stopped publishing it has nothing to say about that interval. A payload that is
not what the field expects is skipped, with one warning per topic and path until one parses
again; no message stops the network thread.

Commands: the power (clipped to the configured battery's rates and state-of-charge window)
is published on the command topic in the configured payload; with a mode topic, the manual
mode is published there first when the gateway takes control. No plan in force hands
control back: the auto mode on the mode topic, else the payload with power 0 and mode auto.
Nothing is retained, so a device restarting after the gateway has gone does not pick up an
old command; and nothing is sent while the broker is away (paho would send it late).

A lost broker is logged once; paho's network loop reconnects with backoff
(``MqttSettings.reconnect_*``) and resubscribes in ``on_connect``, and readings resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable

import pandas as pd
from paho.mqtt import client as mqtt

from der_core import der_data as dd
from der_core.config import BatteryConfig, MqttField, MqttSource
from edge_gateway.mqtt.link import make_client
from edge_gateway.mqtt.settings import MqttSettings
from edge_gateway.sources.base import Measured, Plausible, Samples, within_battery_limits

log = logging.getLogger(__name__)

PASSWORD_VARIABLE = "MQTT_PASSWORD"


def value_at(payload: bytes, path: str | None) -> float:
    """The number at ``path`` ('a.b.0.c': object keys, list items by index) of a JSON payload,
    or the payload itself as a number when ``path`` is None. A number written as a string
    counts (some bridges send them so); anything else raises ValueError saying what was found."""
    text = payload.decode("utf-8")
    value: object = text.strip()
    if path is not None:
        try:
            value = json.loads(text)
        except RecursionError:  # JSON nested past Python's stack: no bridge sends that
            raise ValueError("JSON nested too deeply") from None
        for key in path.split("."):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise ValueError(f"no {key!r} on the path {path!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{dd.shown(value)} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{dd.shown(value)} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{dd.shown(value)} is not a finite number")
    return number


def command_payload(template: str, power_kw: float, mode: str) -> str:
    """The template with ``{power_kw}`` (shortest form, to the watt), ``{power_w}`` (whole watts)
    and ``{mode}`` filled in. Plain replacement rather than ``str.format``, so a JSON template's
    own braces need no escaping."""
    watts = round(power_kw * 1000.0)
    return (template.replace("{power_kw}", f"{round(power_kw, 3) + 0.0:g}").replace("{power_w}", str(watts))
            .replace("{mode}", mode))


class MqttBridge:
    """:class:`edge_gateway.sources.DeviceSource` for a device behind an MQTT bridge."""

    def __init__(self, settings: MqttSource, battery: BatteryConfig, device_id: str,
                 clock: Callable[[], pd.Timestamp] = dd.utc_now) -> None:
        self.settings = settings
        self.battery = battery
        self.broker = MqttSettings(host=settings.host, port=settings.port, username=settings.username,
                                   password=os.environ.get(PASSWORD_VARIABLE) or None)
        self.address = self.broker.address
        self._clock = clock
        self._fields: dict[str, list[tuple[str, MqttField]]] = {}
        for name, field in settings.fields.items():
            self._fields.setdefault(field.topic, []).append((name, field))
        self._samples = Samples()
        self._latest: dict[str, tuple[pd.Timestamp, float]] = {}  # each field's last value and when it came
        self._latest_lock = threading.Lock()  # its own: the network thread must never wait on a command
        self._soc = math.nan  # the last state of charge received, for the commands' window
        self._lock = threading.Lock()
        self._unparsed: set[tuple[str, str | None]] = set()  # topics and paths warned about until they parse
        self._plausible = Plausible(f"mqtt source {self.address}")
        self._holding: bool | None = None  # our command is in force; None: unknown (after a start)
        self._closing = False
        self._lost = False
        self._refused = False
        self._failed_attempts = 0
        self.subscribed = threading.Event()  # the field topics are acknowledged: messages from now on arrive
        self.received = 0  # messages handled (parsed or not)
        self.changed = threading.Condition()  # notified after each message, for whoever waits on one
        self._client = make_client(self.broker, f"der-source-{device_id}-{uuid.uuid4().hex[:8]}")
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        log.info("mqtt source: subscribing to %d topic(s) at %s", len(self._fields), self.address)
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
        self._client.loop_start()

    # -- paho callbacks (its network thread) -----------------------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata, _flags, reason, _properties) -> None:
        if reason.is_failure:
            # paho retries every few seconds: one error line until it is accepted
            log.log(logging.DEBUG if self._refused else logging.ERROR, "mqtt source: broker %s refused the connection "
                    "(%s); check source.username and %s", self.address, reason, PASSWORD_VARIABLE)
            self._refused = True
            return
        if self._lost or self._failed_attempts or self._refused:
            log.warning("mqtt source: broker %s connected again; readings resume", self.address)
        self._lost, self._failed_attempts, self._refused = False, 0, False
        client.subscribe([(topic, 0) for topic in self._fields])  # instants: a lost one is not worth a resend

    def _on_connect_fail(self, _client, _userdata) -> None:
        self._failed_attempts += 1
        level = logging.WARNING if self._failed_attempts == 1 and not self._lost else logging.DEBUG
        log.log(level, "mqtt source: broker %s unreachable; readings skipped until it answers, retrying every %g to %gs",
                self.address, self.broker.reconnect_min_s, self.broker.reconnect_max_s)

    def _on_disconnect(self, _client, _userdata, _flags, reason, _properties) -> None:
        self.subscribed.clear()
        if not self._closing and not self._lost:
            log.warning("mqtt source: lost the broker %s (%s); readings skipped until it returns", self.address, reason)
        self._lost = not self._closing

    def _on_subscribe(self, *_args) -> None:
        self.subscribed.set()

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        try:
            self._take(message.topic, message.payload)
        except Exception as error:  # a bug here must not end paho's network thread
            log.error("mqtt source: a message on %s could not be handled (%s: %s)", message.topic, type(error).__name__, error)
        with self.changed:
            self.received += 1
            self.changed.notify_all()

    def _take(self, topic: str, payload: bytes) -> None:
        values = {}
        for name, field in self._fields.get(topic, ()):
            key = (topic, field.path)
            try:
                values[name] = value_at(payload, field.path) * field.scale * field.sign
            except ValueError as error:
                if key not in self._unparsed:
                    self._unparsed.add(key)
                    log.warning("mqtt source: %s: payload %s skipped (%s); expected a number%s", topic,
                                dd.shown(payload.decode("utf-8", "replace")),
                                error, f" at {field.path!r}" if field.path else "")
                continue
            self._unparsed.discard(key)
        values = self._plausible(values)
        if values:
            at = dd.parse_ts(self._clock())
            self._samples.add(at, Measured.of(values))
            with self._latest_lock:
                self._latest.update({name: (at, value) for name, value in values.items()})
            self._soc = values.get(dd.BATTERY_SOC, self._soc)

    # -- readings ---------------------------------------------------------------------------
    def sample(self, at: pd.Timestamp | None = None) -> None:
        """Nothing to do: every message the bridge sends is a sample."""

    def reading(self, start: pd.Timestamp, end: pd.Timestamp) -> Measured | None:
        within = self._samples.take(start, end)
        return Measured.mean(within) if within else None

    def instant(self, at: pd.Timestamp, since: pd.Timestamp) -> Measured | None:
        """The latest value of each field received after ``since``: a bridge that publishes on
        change sends nothing while a value holds, so the last one stands until ``since``. None
        while the broker is away."""
        if not self._client.is_connected():
            return None
        with self._latest_lock:
            fresh = {name: value for name, (ts, value) in self._latest.items() if since < ts <= at}
        return Measured.of(fresh) if fresh else None

    # -- commands ---------------------------------------------------------------------------
    def command(self, power_kw: float, at: pd.Timestamp) -> float:
        command = self.settings.command
        if command is None:
            return math.nan
        with self._lock:
            if not self._client.is_connected():
                return math.nan
            if math.isnan(power_kw):
                self._hand_back("no plan or setpoint in force")
                return math.nan
            battery = self.battery
            power_kw = within_battery_limits(power_kw, battery.max_charge_rate_kw, battery.max_discharge_rate_kw, self._soc,
                                             (battery.min_soc, battery.max_soc))
            if command.mode_topic is not None and self._holding is not True:
                self._publish(command.mode_topic, command.manual_mode)
            self._publish(command.topic, command_payload(command.payload, command.sign * power_kw, command.manual_mode))
            if self._holding is not True:
                log.info("mqtt source: the battery follows the gateway's commands on %s", command.topic)
            self._holding = True
            return power_kw

    def _hand_back(self, why: str) -> None:
        if self._holding is False:
            return
        command = self.settings.command
        if command.mode_topic is not None:
            topic, payload = command.mode_topic, command.auto_mode
        else:
            topic, payload = command.topic, command_payload(command.payload, 0.0, command.auto_mode)
        self._publish(topic, payload)
        if self._holding:
            log.warning("mqtt source: %s; battery control handed back to the device's own mode (%s on %s)", why,
                        dd.shown(payload), topic)
        self._holding = False

    def _publish(self, topic: str, payload: str) -> None:
        self._client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
