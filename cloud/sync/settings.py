"""Settings of the sync job, validated once from flags and environment variables, and the
stores they select (the spec's "Cloud Sync" variables: ``SUPABASE_*``, ``INFLUXDB_*``,
``SYNC_BATCH_SIZE``, ``SYNC_INTERVAL_SECONDS``, plus ``DATABASE_URL``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cloud.store.base import CloudStore
from cloud.store.factory import open_store_from_args
from cloud.sync.job import DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL_S, SyncSettings
from der_core.cli_support import env_value, positive_float, positive_int
from der_core.errors import UsageError
from edge_gateway.stores.base import EdgeStore
from edge_gateway.stores.factory import open_edge_store
from edge_gateway.stores.influx_settings import influx_requested, influx_settings

MEMORY = ":memory:"  # SQLite's store held in memory, made and gone with the connection


def sync_settings(args: argparse.Namespace) -> SyncSettings:
    batch = env_value("SYNC_BATCH_SIZE", positive_int, DEFAULT_BATCH_SIZE, expected="a positive whole number")
    return SyncSettings(batch_size=batch)  # watermarks under the edge store's own name (EdgeStore.source)


def interval_s(args: argparse.Namespace) -> float:
    if args.interval is not None:
        return args.interval
    return env_value("SYNC_INTERVAL_SECONDS", positive_float, float(DEFAULT_INTERVAL_S),
                     expected="a positive number of seconds")


def open_edge(args: argparse.Namespace) -> EdgeStore:
    """The gateway's edge store the sync reads. A path with no store is refused for a run
    that sends (``--once``: a mistyped path would report 0 readings synced) and read as an
    empty store by ``--status`` (a site of imported meter files has no gateway), made by
    neither; ``--continuous`` may start before its gateway's first reading."""
    influx = influx_settings(args) if influx_requested(args) else None
    path = Path(args.edge_store)
    if influx is None and (not path.exists() or path.is_file() and path.stat().st_size == 0):  # an empty file: none
        if args.status:
            return open_edge_store(MEMORY)
        if args.once:
            raise UsageError(f"--edge-store {args.edge_store}: no edge store there; expected the file a gateway "
                             "writes (run_simulator.py --store, default data/edge.db)")
    return open_edge_store(args.edge_store, influx, reader=True)


def open_cloud(args: argparse.Namespace) -> CloudStore:
    """The cloud store of a command line; one that only reads it (``--status``, ``--forget``
    without ``--yes``) needs it to exist."""
    return open_store_from_args(args, existing=bool(args.status or (args.forget and not args.yes)))
