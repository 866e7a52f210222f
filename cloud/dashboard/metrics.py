"""Prometheus metrics, computed from the cloud store at scrape time.

The jobs run in other processes (cron, ``run_pipeline.py --continuous``), so counters kept in
this process would see none of their work. ``pipeline_runs`` already records every run; a
custom collector turns that table and the readings' coverage into gauges on each scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pandas as pd
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud.dashboard import queries as q
from cloud.store import schema as s
from cloud.store.base import CloudStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCollector(Collector):
    def __init__(self, store: CloudStore, lock: threading.Lock) -> None:
        self.store, self.lock = store, lock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = pd.Timestamp.now(tz="UTC")
        with self.lock:
            jobs = q.pipeline_status(self.store, now)
            stats = self.store.reading_stats()
        success = GaugeMetricFamily("der_job_last_success_timestamp_seconds",
                                    "Unix time the job last finished successfully", labels=["job"])
        rows = GaugeMetricFamily("der_job_last_rows_processed", "Rows the job's last successful run processed",
                                 labels=["job"])
        failures = GaugeMetricFamily("der_job_failed_runs", f"Failed runs among the newest {q.RUN_HISTORY} recorded",
                                     labels=["job"])
        for job in jobs:
            if job["last_success"] is not None:
                success.add_metric([job["job"]], pd.Timestamp(job["last_success"]).timestamp())
            rows.add_metric([job["job"]], job["rows"])
            failures.add_metric([job["job"]], job["failures"])
        yield from (success, rows, failures)

        freshness = GaugeMetricFamily("der_site_data_age_seconds", "Seconds since the site's newest reading",
                                      labels=["device_id"])
        newest = GaugeMetricFamily("der_site_last_reading_timestamp_seconds", "Unix time of the site's newest reading",
                                   labels=["device_id"])
        count = GaugeMetricFamily("der_site_readings", "Readings stored for the site", labels=["device_id"])
        for device, stat in sorted(stats.items()):
            last = pd.Timestamp(stat[s.LAST_TS])
            freshness.add_metric([device], max(0.0, (now - last).total_seconds()))
            newest.add_metric([device], last.timestamp())
            count.add_metric([device], stat[s.ROW_COUNT])
        yield from (freshness, newest, count)


def registry_for(store: CloudStore, lock: threading.Lock) -> CollectorRegistry:
    """A registry of its own per app, so two apps (or tests) never share collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, lock))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
