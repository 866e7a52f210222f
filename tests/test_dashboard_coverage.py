"""The sites' coverage the API and /metrics report equals a direct query over ``der_readings``,
also after new readings arrive, on the embedded store and on PostgreSQL; and the in-memory
snapshot keeps the freshness bound ``cloud.dashboard.access`` states."""

from __future__ import annotations

import sqlite3

import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cloud.dashboard import queries as q
from cloud.dashboard.access import Coverage, StoreAccess
from cloud.dashboard.app import create_app
from cloud.store.postgres import PostgresCloudStore
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.config import SimulatorConfig, site_record
from der_core.sites import site_configs
from tests.pg_fixtures import pg_url  # noqa: F401  (fixture)
from tests.sim_helpers import readings as simulate

DIRECT = (f"SELECT {dd.DEVICE_ID}, MIN({dd.TS}), MAX({dd.TS}), COUNT(*) FROM der_readings "
          f"GROUP BY {dd.DEVICE_ID} ORDER BY {dd.DEVICE_ID}")


def direct_sqlite(store: SQLiteCloudStore) -> list[tuple]:
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute(DIRECT).fetchall()
    as_ts = lambda micros: dd.format_ts(pd.Timestamp(micros, unit="us", tz="UTC"))  # noqa: E731
    return [(device, as_ts(first), as_ts(last), n) for device, first, last, n in rows]


def direct_postgres(store: PostgresCloudStore) -> list[tuple]:
    with psycopg.connect(store.url) as conn:
        rows = conn.execute(DIRECT).fetchall()
    return [(device, dd.format_ts(first), dd.format_ts(last), n) for device, first, last, n in rows]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        store = SQLiteCloudStore(tmp_path / "cloud.db")
        yield store, direct_sqlite
    else:
        store = PostgresCloudStore(request.getfixturevalue("pg_url"))
        yield store, direct_postgres
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("TRUNCATE der_readings, sites")  # the database is shared by this module
    store.close()


def reported(client: TestClient) -> list[tuple]:
    return [(site["device_id"], site["first_reading"], site["last_reading"], site["readings"])
            for site in client.get("/api/sites").json() if site["readings"]]


def metric_counts(client: TestClient) -> dict[str, float]:
    return {sample.labels["device_id"]: sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples if sample.name == "der_site_readings"}


def test_coverage_equals_a_direct_query_before_and_after_new_readings(backend):
    store, direct = backend
    configs = site_configs(SimulatorConfig(device_id="cov", interval_seconds=900, seed=5), 3)
    store.upsert_sites([site_record(c) for c in configs])
    store.upsert_readings(simulate(configs[:2], "2024-03-01", "2024-03-03"))
    # A snapshot that is never younger than zero seconds: every request reads the store.
    client = TestClient(create_app(store, coverage_max_age_s=0, coverage_stale_limit_s=0))
    assert reported(client) == direct(store) and len(direct(store)) == 2

    # New readings: a later day for one site, an overlapping re-send (no double count), a new site.
    store.upsert_readings(simulate(configs[:1], "2024-03-02", "2024-03-04"))
    store.upsert_readings(simulate(configs[2:], "2024-03-03", "2024-03-04"))
    expected = direct(store)
    assert [row[3] for row in expected] == [288, 192, 96]
    assert reported(client) == expected
    one = client.get(f"/api/sites/{configs[0].device_id}").json()
    assert (one["device_id"], one["first_reading"], one["last_reading"], one["readings"]) == expected[0]
    assert metric_counts(client) == {row[0]: row[3] for row in expected}
    # The default reading window follows the newest reading.
    window = client.get(f"/api/sites/{configs[0].device_id}/readings").json()
    assert window["series"]["ts"][-1] == expected[0][2]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_is_served_within_its_bound_and_refreshed_past_it(tmp_path):
    store = SQLiteCloudStore(tmp_path / "cloud.db")
    configs = site_configs(SimulatorConfig(device_id="bound", interval_seconds=900, seed=6), 1)
    store.upsert_readings(simulate(configs, "2024-03-01", "2024-03-02"))
    clock = Clock()
    coverage = Coverage(StoreAccess(store), max_age_s=5, stale_limit_s=60, clock=clock)
    device = configs[0].device_id
    assert coverage.site(device)["readings"] == 96

    store.upsert_readings(simulate(configs, "2024-03-02", "2024-03-03"))
    clock.now = 4.0  # within max_age: the snapshot as it was
    assert coverage.site(device)["readings"] == 96
    clock.now = 61.0  # past the stale limit: this request waits for a fresh read
    assert coverage.site(device)["readings"] == 192

    store.upsert_readings(simulate(configs, "2024-03-03", "2024-03-04"))
    clock.now = 70.0  # past max_age, within the limit: served at once, refreshed in the background
    assert coverage.site(device)["readings"] == 192
    with coverage._refreshing:  # the background refresh holds this until it is done
        pass
    assert coverage.site(device)["readings"] == 288
    store.close()


def test_a_failed_background_refresh_keeps_the_last_snapshot(tmp_path, caplog):
    store = SQLiteCloudStore(tmp_path / "cloud.db")
    configs = site_configs(SimulatorConfig(device_id="keep", interval_seconds=900, seed=7), 1)
    store.upsert_readings(simulate(configs, "2024-03-01", "2024-03-02"))
    clock = Clock()
    access = StoreAccess(store)
    coverage = Coverage(access, max_age_s=5, stale_limit_s=60, clock=clock)
    before = coverage.sites()
    access.close()  # the refresher's own connection is gone: its next read fails
    clock.now = 10.0
    assert coverage.sites() == before
    with coverage._refreshing:
        pass
    assert coverage.sites() == before
    assert "refreshing site coverage failed" in caplog.text
    store.close()


def test_unknown_site_in_the_snapshot_is_unknown():
    class Empty:
        label = "empty"

        def reading_stats(self):
            return {}

        def sites(self):
            return []

    with pytest.raises(q.UnknownSite):
        Coverage(StoreAccess(Empty())).site("nowhere")
