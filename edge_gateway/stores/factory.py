"""Edge-store selection: the one place that turns settings into an :class:`EdgeStore`.

SQLite is the default; InfluxDB 2.x when enabled (``--enable-influxdb``, or for the sync
job when an InfluxDB token is configured; :mod:`edge_gateway.stores.influx_settings`).
"""

from __future__ import annotations

from pathlib import Path

from der_core.config import DEFAULT_EDGE_STORE
from edge_gateway.stores.base import EdgeStore
from edge_gateway.stores.influx_settings import InfluxSettings
from edge_gateway.stores.sqlite import SQLiteEdgeStore


def open_edge_store(sqlite_path: str | Path = DEFAULT_EDGE_STORE, influx: InfluxSettings | None = None,
                    reader: bool = False) -> EdgeStore:
    """The configured edge store. With InfluxDB, the SQLite file serves as its spool, which a
    ``reader`` (the sync) reads and leaves to the gateway to send."""
    spool = SQLiteEdgeStore(sqlite_path)
    if influx is None:
        return spool
    from edge_gateway.stores.influx import (
        InfluxEdgeStore,  # optional dependency, loaded on demand
    )

    return InfluxEdgeStore(influx, spool=spool, reader=reader)
