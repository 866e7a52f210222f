"""InfluxDB settings: the spec's ``--influxdb-*`` flags and ``INFLUXDB_*`` variables, validated once.

A flag wins over its variable, the variable over the default (the spec's rule). The store
(:mod:`edge_gateway.stores.influx`) and the store selection (:mod:`edge_gateway.stores.factory`)
both read these settings, so they live apart from either.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from der_core.der_data import shown
from der_core.errors import UsageError
from der_core.redact import redact

DEFAULT_INFLUX_URL = "http://localhost:8086"
DEFAULT_INFLUX_ORG = "edge-gateway"
DEFAULT_INFLUX_BUCKET = "der-data"
DEFAULT_RETENTION_DAYS = 7


@dataclass(frozen=True)
class InfluxSettings:
    url: str = DEFAULT_INFLUX_URL
    token: str = ""
    org: str = DEFAULT_INFLUX_ORG
    bucket: str = DEFAULT_INFLUX_BUCKET
    retention_days: int = DEFAULT_RETENTION_DAYS
    batch_size: int = 500
    flush_interval_s: float = 10.0
    max_retries: int = 5
    retry_base_s: float = 0.5
    timeout_s: float = 10.0


def add_influx_flags(parser: argparse.ArgumentParser, *, with_enable: bool = True) -> None:
    """The spec's InfluxDB options (defaults come from ``INFLUXDB_*``, then the spec)."""
    group = parser.add_argument_group("InfluxDB 2.x edge store")
    if with_enable:
        group.add_argument("--enable-influxdb", action="store_true", help="store readings in InfluxDB 2.x")
    group.add_argument("--influxdb-url", help=f"server URL (INFLUXDB_URL, default {DEFAULT_INFLUX_URL})")
    group.add_argument("--influxdb-token", help="authentication token (INFLUXDB_TOKEN)")
    group.add_argument("--influxdb-org", help=f"organisation (INFLUXDB_ORG, default {DEFAULT_INFLUX_ORG})")
    group.add_argument("--influxdb-bucket", help=f"bucket (INFLUXDB_BUCKET, default {DEFAULT_INFLUX_BUCKET})")
    group.add_argument(
        "--influxdb-retention-days",
        type=int,
        help=f"retention of a bucket created on first use (default {DEFAULT_RETENTION_DAYS})",
    )


def influx_settings(args: argparse.Namespace | None = None, *, require_token: bool = True) -> InfluxSettings:
    """Merge flags, ``INFLUXDB_*`` variables and defaults; a missing token is a usage error."""

    def pick(flag: str, env: str, default):
        value = getattr(args, flag, None) if args is not None else None
        if value is None or value == "":
            value = os.environ.get(env) or default
        return value

    retention = getattr(args, "influxdb_retention_days", None) if args is not None else None
    settings = InfluxSettings(
        url=pick("influxdb_url", "INFLUXDB_URL", DEFAULT_INFLUX_URL),
        token=pick("influxdb_token", "INFLUXDB_TOKEN", ""),
        org=pick("influxdb_org", "INFLUXDB_ORG", DEFAULT_INFLUX_ORG),
        bucket=pick("influxdb_bucket", "INFLUXDB_BUCKET", DEFAULT_INFLUX_BUCKET),
        retention_days=DEFAULT_RETENTION_DAYS if retention is None else retention,
    )
    if require_token and not settings.token:
        raise UsageError("InfluxDB token missing: pass --influxdb-token or set INFLUXDB_TOKEN")
    if not 0 <= settings.retention_days <= 36_500:  # a century: InfluxDB holds the span in seconds, a signed 64-bit count
        raise UsageError(f"--influxdb-retention-days: expected 0 (forever) to 36500 days, got {settings.retention_days}")
    if not settings.url.startswith(("http://", "https://")):
        raise UsageError(f"InfluxDB URL {redact(shown(settings.url, 80))}: expected http://host:port or https://host:port")
    return settings


def influx_requested(args: argparse.Namespace | None) -> bool:
    """True when InfluxDB is the edge store: ``--enable-influxdb``, or a token by flag/variable
    for jobs (like sync) that have no enable flag."""
    if args is not None and getattr(args, "enable_influxdb", False):
        return True
    if args is not None and hasattr(args, "enable_influxdb"):
        return False
    return bool((args is not None and getattr(args, "influxdb_token", None)) or os.environ.get("INFLUXDB_TOKEN"))
