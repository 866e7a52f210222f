"""``run_simulator.py --status``: what the edge store holds, per device, and whether the
configured servers (MQTT broker, InfluxDB) answer. Returns False when one does not, so
``--status`` exits 1 and a health check can rely on it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TextIO

import pandas as pd

from der_core import der_data as dd
from der_core.cli_support import print_table
from der_core.errors import DERError
from der_core.redact import redact
from edge_gateway.mqtt.probe import probe_broker
from edge_gateway.mqtt.settings import MqttSettings
from edge_gateway.stores.base import EdgeStore
from edge_gateway.stores.factory import open_edge_store
from edge_gateway.stores.influx_settings import InfluxSettings
from edge_gateway.stores.sqlite import SQLiteEdgeStore

MEMORY = ":memory:"  # SQLite's in-memory file: an empty spool, made and gone with the connection


def acknowledged(state_dir: Path) -> dict[str, str]:
    """Per device, the newest reading the MQTT broker acknowledged (from the daemon's watermarks)."""
    marks: dict[str, str] = {}
    for path in sorted(state_dir.glob("mqtt-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for device, micros in data.items() if isinstance(data, dict) else ():
            if isinstance(micros, int):
                marks[device] = dd.format_ts(pd.Timestamp(micros, unit="us", tz="UTC"))
    return marks


def edge_rows(store: EdgeStore, acked: dict[str, str] | None = None) -> list[dict]:
    now = dd.utc_now()
    rows = []
    for device in store.devices():
        latest = store.latest(device)
        last = latest[dd.TS].iloc[0] if not latest.empty else None
        row = {
            "device": device,
            "readings": store.count(device),
            "last reading": dd.format_ts(last) if last is not None else None,
            "age": str(pd.Timedelta(now - last).floor("s")) if last is not None else None,
            "soc %": float(latest[dd.BATTERY_SOC].iloc[0]) if last is not None else None,
        }
        if acked is not None:
            row["mqtt acknowledged"] = acked.get(device)
        rows.append(row)
    return rows


def influx_status(path: Path, settings: InfluxSettings, out: TextIO, acked: dict[str, str] | None = None) -> bool:
    """Reachability and spool size, then per device what InfluxDB and the spool hold. The
    store is opened as the sync opens it, a reader: a status sends none of the gateway's
    spool, creates no bucket, and makes no spool file where the gateway has made none."""
    quick = dataclasses.replace(settings, max_retries=0, timeout_s=min(settings.timeout_s, 3.0))
    try:
        store = open_edge_store(path if path.exists() else MEMORY, quick, reader=True)
    except DERError as error:
        print(redact(f"influxdb {settings.url}: unreachable ({error})"), file=out)
        return False
    try:
        try:
            reachable = bool(store.ping())
        except DERError:
            reachable = False
        where = f"influxdb {redact(settings.url)} (bucket {settings.bucket})"
        spooled = f", {store.spool_size()} reading(s) spooled for it"
        if not reachable:
            print(f"{where}: unreachable{spooled}", file=out)
            return False
        try:
            rows = edge_rows(store, acked)
            stored = store.count()
        except DERError as error:  # a bucket not made yet, a token that may not read it
            print(redact(f"{where}: reachable{spooled}; {error}"), file=out)
            return False
        print(f"{where}: reachable, {stored} reading(s) stored{spooled}", file=out)
        print_table(rows, file=out)
        return True
    finally:
        store.close()


def edge_status(path: str | Path, out: TextIO, *, influx: InfluxSettings | None = None, mqtt: MqttSettings | None = None) -> bool:
    """With InfluxDB the readings are InfluxDB's (and its spool's), listed by :func:`influx_status`;
    else the SQLite edge store's."""
    path, healthy = Path(path), True
    acked = acknowledged(path.parent / "state") if mqtt is not None else None
    if influx is not None:
        healthy &= influx_status(path, influx, out, acked)
    elif not path.exists():
        print(f"edge store {path}: no readings yet (it is created by the first run)", file=out)
    else:
        with SQLiteEdgeStore(path) as store:
            print(f"edge store {path}: {store.count()} readings, {len(store.devices())} device(s)", file=out)
            print_table(edge_rows(store, acked), file=out)
    if mqtt is not None:
        problem = probe_broker(mqtt)
        print(f"mqtt broker {mqtt.address}: " + ("reachable" if problem is None else f"unreachable ({problem})"), file=out)
        healthy &= problem is None
    return healthy
