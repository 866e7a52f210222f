"""MQTT connection settings: the ``--mqtt-*`` flags and ``MQTT_*`` variables, validated once.

A flag wins over its variable, the variable over the default (the spec's rule for InfluxDB,
kept here so every option of the gateway behaves the same way).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from der_core.der_data import shown
from der_core.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class MqttSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    keepalive_s: int = 30
    queue_size: int = 1000  # readings held in memory while the broker is away; older ones wait in the store
    inflight_window: int = 100  # unacknowledged publishes handed to the client at once
    # The backoff doubles from min to max: a broker back after any outage is reached again
    # within max plus a connection attempt (paho's connect_timeout, 5 s), under 10 s.
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 4.0
    supervise_s: float = 5.0  # how often the link checks that its threads still run
    stop_timeout_s: float = 5.0  # how long a clean stop waits for acknowledgements

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def add_mqtt_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MQTT (telemetry out, battery setpoints in)")
    group.add_argument("--enable-mqtt", action="store_true", help="publish readings and accept battery setpoints over MQTT")
    group.add_argument("--mqtt-host", help=f"broker host (MQTT_HOST, default {DEFAULT_HOST})")
    group.add_argument("--mqtt-port", help=f"broker port (MQTT_PORT, default {DEFAULT_PORT}, {DEFAULT_TLS_PORT} with TLS)")
    group.add_argument("--mqtt-username", help="user name (MQTT_USERNAME)")
    group.add_argument("--mqtt-password", help="password (MQTT_PASSWORD; prefer the variable, flags show in ps)")
    group.add_argument("--mqtt-tls", action="store_const", const=True, default=None, help="connect with TLS (MQTT_TLS=true)")
    group.add_argument("--mqtt-ca-file", help="CA certificate (PEM) to verify the broker; implies --mqtt-tls (MQTT_CA_FILE)")


def _pick(args: argparse.Namespace | None, attr: str, env: str) -> tuple[str | None, str]:
    """The raw value and where it came from, for error messages that name the right source."""
    value = getattr(args, attr, None) if args is not None else None
    if value is not None and value != "":
        return str(value), "--" + attr.replace("_", "-")
    raw = os.environ.get(env)
    if raw:
        return raw, f"environment variable {env}"
    return None, env


def _port(raw: str, source: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(f"{source}={raw!r}: expected a TCP port number 1-65535")
    return port


def _tls(args: argparse.Namespace | None) -> bool:
    if args is not None and getattr(args, "mqtt_tls", None):
        return True
    raw = os.environ.get("MQTT_TLS", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise UsageError(f"environment variable MQTT_TLS={os.environ['MQTT_TLS']!r}: expected true or false")


def _host_name(host: str) -> bool:
    """``host`` can be looked up: no spaces, slashes or control characters, and a name the
    IDNA codec encodes (253 characters at most, labels of 63). Anything else fails inside
    the client's network thread, a traceback on every reconnect instead of one line."""
    if any(c.isspace() or not c.isprintable() or c == "/" for c in host):
        return False
    try:
        return len(host.encode("idna")) <= 253
    except UnicodeError:
        return False


def mqtt_settings(args: argparse.Namespace | None = None) -> MqttSettings:
    """Merge flags, ``MQTT_*`` variables and defaults; bad values raise a one-line ``UsageError``."""
    host, _ = _pick(args, "mqtt_host", "MQTT_HOST")
    port_raw, port_source = _pick(args, "mqtt_port", "MQTT_PORT")
    username, _ = _pick(args, "mqtt_username", "MQTT_USERNAME")
    password, password_source = _pick(args, "mqtt_password", "MQTT_PASSWORD")
    ca_file, ca_source = _pick(args, "mqtt_ca_file", "MQTT_CA_FILE")
    tls = _tls(args) or ca_file is not None
    if ca_file is not None and not Path(ca_file).is_file():
        raise UsageError(f"{ca_source} {ca_file!r}: CA file not found; expected a PEM certificate file")
    if password is not None and username is None:
        raise UsageError(f"{password_source} is set without a user name: pass --mqtt-username or set MQTT_USERNAME")
    if host and not _host_name(host):
        raise UsageError(f"MQTT host {shown(host)}: expected a host name or IP address (no scheme, no path)")
    port = _port(port_raw, port_source) if port_raw is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    return MqttSettings(host=host or DEFAULT_HOST, port=port, username=username, password=password, tls=tls, ca_file=ca_file)


def mqtt_configured(args: argparse.Namespace | None) -> bool:
    """True when the user asked for MQTT, by flag or by pointing ``MQTT_HOST`` at a broker."""
    return bool(getattr(args, "enable_mqtt", False) or os.environ.get("MQTT_HOST"))
