"""Secrets never reach output: every line that shows a server address, URL or an error that
may quote one goes through :func:`redact`. In a URL the user name, host, port and path stay,
since they are what a person needs to find the server.

Credentials travel inside URLs (``postgresql://user:pass@host/db``,
``http://user:token@influx:8086``), in query strings (``?apikey=...``), in libpq keyword
strings (``password=...``) and in variables and flags (``INFLUXDB_TOKEN``, ``SUPABASE_KEY``,
``MQTT_PASSWORD``, ``HOMEASSISTANT_TOKEN``, ``--influxdb-token``, ``--mqtt-password``). The first three are recognised
by their shape; the values of the last are known by name and replaced wherever they appear,
so a vendor error that quotes a token verbatim is cleaned too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

MASK = "***"

#: Variables whose values are secrets, and the password part of the ones that hold a URL.
SECRET_VARIABLES = ("INFLUXDB_TOKEN", "SUPABASE_KEY", "MQTT_PASSWORD", "ENTSOE_API_KEY", "SOLCAST_API_KEY",
                    "FORECAST_SOLAR_API_KEY", "HOMEASSISTANT_TOKEN", "DER_OPENADR_KEY_PASSPHRASE")
URL_VARIABLES = ("DATABASE_URL", "SUPABASE_URL", "INFLUXDB_URL")
#: Flags whose value is a secret.
SECRET_FLAGS = ("--influxdb-token", "--mqtt-password")

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@\s:]*)(?P<password>:[^/?#@\s]*)?@")
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:token|securitytoken|key|apikey|api_key|access_token|password|passwd|secret|sig)=)[^&#\s]*")
_KEYWORD_SECRET = re.compile(r"(?i)\b(password|passwd|token|apikey|api_key)=(?:'[^']*'|\S+)")
_SHORTEST_SECRET = 4  # shorter values would mask ordinary words

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in output from now on (a token given by flag)."""
    if value and len(value) >= _SHORTEST_SECRET:
        _registered.add(value)


def register_flag_secrets(argv: Sequence[str]) -> None:
    """Register the values of :data:`SECRET_FLAGS` in a command line (``--flag V`` or ``--flag=V``)."""
    words = list(argv)
    for i, word in enumerate(words):
        for flag in SECRET_FLAGS:
            if word == flag and i + 1 < len(words):
                register_secret(words[i + 1])
            elif word.startswith(flag + "="):
                register_secret(word[len(flag) + 1 :])


def _known_secrets() -> Iterable[str]:
    yield from _registered
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= _SHORTEST_SECRET:
            yield value
    for name in URL_VARIABLES:
        try:
            password = urlsplit(os.environ.get(name, "")).password
        except ValueError:
            password = None
        if password and len(password) >= _SHORTEST_SECRET:
            yield password


def url_address(url: str) -> str:
    """``host[:port]`` of ``url``: where the server is, without any credentials."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return redact(url)
    return f"{host}:{port}" if port else host


def redact(text: object) -> str:
    """``text`` with every credential this module recognises replaced by ``***``."""
    text = str(text)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@" if m["password"] else m[0], text)
    text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    text = _KEYWORD_SECRET.sub(rf"\1={MASK}", text)
    for secret in sorted(set(_known_secrets()), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A log handler filter that renders each record once and masks secrets in the result,
    so neither a message, its arguments nor a vendor exception's text shows one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
