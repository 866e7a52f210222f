"""Prometheus metrics, computed from the cloud store at scrape time.

The jobs run in other processes (cron, ``run_pipeline.py --continuous``), so counters kept in
this process would see none of their work. ``pipeline_runs`` already records every run; a
custom collector turns that table and the readings' coverage into gauges on each scrape. The
coverage comes from the dashboard's in-memory snapshot (:class:`~cloud.dashboard.access.Coverage`,
with its freshness bound); the runs are read live.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud.dashboard import queries as q
from cloud.dashboard.access import Coverage, StoreAccess

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCollector(Collector):
    def __init__(self, coverage: Coverage, access: StoreAccess) -> None:
        self.coverage, self.access = coverage, access

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = pd.Timestamp.now(tz="UTC")
        with self.access() as store:
            jobs = q.pipeline_status(store, now)
        sites = [site for site in self.coverage.sites() if site["last_reading"] is not None]
        success = GaugeMetricFamily("der_job_last_success_timestamp_seconds",
                                    "Unix time the job last finished successfully", labels=["job"])
        rows = GaugeMetricFamily("der_job_last_rows_processed", "Rows the job's last successful run processed",
                                 labels=["job"])
        failures = GaugeMetricFamily("der_job_failed_runs", f"Failed runs among the newest {q.RUN_HISTORY} recorded",
                                     labels=["job"])
        for job in jobs:
            if job["last_success"] is not None:  # a job that never succeeded has no such run: no sample, not 0
                success.add_metric([job["job"]], pd.Timestamp(job["last_success"]).timestamp())
                rows.add_metric([job["job"]], job["rows"])
            failures.add_metric([job["job"]], job["failures"])
        yield from (success, rows, failures)

        freshness = GaugeMetricFamily("der_site_data_age_seconds", "Seconds since the site's newest reading",
                                      labels=["device_id"])
        newest = GaugeMetricFamily("der_site_last_reading_timestamp_seconds", "Unix time of the site's newest reading",
                                   labels=["device_id"])
        count = GaugeMetricFamily("der_site_readings", "Readings stored for the site", labels=["device_id"])
        for site in sites:
            device, last = site["device_id"], q.last_reading_ts(site)
            freshness.add_metric([device], max(0.0, (now - last).total_seconds()))
            newest.add_metric([device], last.timestamp())
            count.add_metric([device], site["readings"])
        yield from (freshness, newest, count)


def registry_for(coverage: Coverage, access: StoreAccess) -> CollectorRegistry:
    """A registry of its own per app, so two apps (or tests) never share collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(coverage, access))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
