"""The Supabase adapter against a local fake PostgREST whose row cap is smaller than the
data: the CloudStore contract, pagination that never truncates, conflict handling."""

from __future__ import annotations

import pandas as pd
import pytest

from cloud.store import schema as s
from cloud.store.supabase import SupabaseCloudStore
from cloud.sync.job import SyncSettings, sync_once
from cloud.sync.retry import RetryPolicy
from der_core import der_data as dd
from der_core.errors import StoreError, StoreUnavailable
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.cloud_store_contract import CloudStoreContract
from tests.fakes.postgrest import FakePostgrest, FakeTable
from tests.sync_fixtures import assert_same_readings, readings, site

MAX_ROWS = 50
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"  # shaped like a service key


def reading_stats(fake: FakePostgrest) -> list[dict]:
    frame = pd.DataFrame(list(fake.tables[s.READINGS].rows.values()), columns=[dd.DEVICE_ID, dd.TS])
    frame[dd.TS] = pd.to_datetime(frame[dd.TS], utc=True)
    grouped = frame.groupby(dd.DEVICE_ID)[dd.TS].agg(["min", "max", "count"]).reset_index()
    return [{dd.DEVICE_ID: r[dd.DEVICE_ID], s.FIRST_TS: dd.format_ts(r["min"]), s.LAST_TS: dd.format_ts(r["max"]),
             s.ROW_COUNT: int(r["count"])} for _, r in grouped.iterrows()]


def fake_server(max_rows: int = MAX_ROWS) -> FakePostgrest:
    tables = {
        t.name: FakeTable(t.keys, [c for c, kind in t.columns.items() if kind == s.TS], t.serial)
        for t in s.TABLES.values()
    }
    return FakePostgrest(tables, max_rows=max_rows, views={s.READING_STATS: reading_stats})


@pytest.fixture
def fake():
    with fake_server() as server:
        yield server


@pytest.fixture
def store(fake):
    return SupabaseCloudStore(fake.url, KEY, write_batch=120)


class TestSupabaseContract(CloudStoreContract):
    pass


def test_reads_page_past_the_server_row_cap(store, fake):
    frame = readings(devices=2, steps=115)
    store.upsert_readings(frame)
    fake.requests.clear()
    back = store.read_readings()
    assert_same_readings(back, frame)
    gets = [n for method, table, n in fake.requests if method == "GET"]
    assert max(gets) == MAX_ROWS and sum(gets) == 230 and gets[-1] == 0  # capped pages, then an empty one
    assert len(store.read_readings(limit=120)) == 120
    assert store.count_readings() == 230 and store.count_readings("dev-001") == 115


def test_upserts_go_in_batches_and_merge_on_the_primary_key(store, fake):
    frame = readings(devices=1, steps=300)
    store.upsert_readings(frame)
    store.upsert_readings(frame.assign(**{dd.PRICE: 0.5}))
    posts = [n for method, table, n in fake.requests if method == "POST" and table == s.READINGS]
    assert posts == [120, 120, 60] * 2
    assert len(fake.tables[s.READINGS].rows) == 300
    assert store.read_readings()[dd.PRICE].eq(0.5).all()


def test_server_refusal_is_a_store_error_naming_the_table(fake):
    fake.tables[s.READINGS].keys = (dd.DEVICE_ID,)  # a table without the expected unique key
    store = SupabaseCloudStore(fake.url, KEY)
    with pytest.raises(StoreError, match="upsert into der_readings failed .42P10"):
        store.upsert_readings(readings(devices=1, steps=2))


def test_missing_table_points_at_the_migrations(fake):
    del fake.tables[s.FORECASTS]
    with pytest.raises(StoreError, match="supabase db push"):
        SupabaseCloudStore(fake.url, KEY).init_schema()


def test_unreachable_server_is_store_unavailable():
    with fake_server() as server:
        url = server.url
    with pytest.raises(StoreUnavailable, match="supabase 127.0.0.1"):
        SupabaseCloudStore(url, KEY).count_readings()


def test_sync_into_supabase_end_to_end(tmp_path, fake, store):
    frame = readings(devices=3, steps=90)
    with SQLiteEdgeStore(tmp_path / "edge.db") as edge:
        edge.write(frame)
        edge.put_site(site("dev-002"))
        settings = SyncSettings(batch_size=100, retry=RetryPolicy(attempts=1))
        sync_once(edge, store, settings)
        sync_once(edge, store, settings)
    assert_same_readings(store.read_readings(), frame)
    assert store.last_run("cloud_sync")[s.STATUS] == "ok"
    assert store.reading_stats()["dev-002"][s.ROW_COUNT] == 90


@pytest.mark.parametrize("rows, limit", [(MAX_ROWS - 1, None), (MAX_ROWS, None), (MAX_ROWS + 1, None),
                                         (2 * MAX_ROWS, None), (2 * MAX_ROWS, MAX_ROWS), (2 * MAX_ROWS, MAX_ROWS + 1)])
def test_reads_at_the_server_row_cap_return_every_row_once(store, rows, limit):
    frame = readings(devices=1, steps=rows)
    store.upsert_readings(frame)
    back = store.read_readings(limit=limit)
    assert_same_readings(back, frame.iloc[:limit])


def test_a_reading_stored_while_pages_are_read_takes_no_other_reading_s_place(store, fake, monkeypatch):
    """A sync storing a reading of one device while another device's readings are paged must
    not make the reader see one of them twice."""
    frame = readings(devices=2, steps=2 * MAX_ROWS)
    store.upsert_readings(frame)
    late = readings(devices=1, steps=1, start=frame[dd.TS].max() + pd.Timedelta(hours=1))  # dev-000's newest
    pages = []
    call = store._call

    def read_then_sync(action, request):
        answer = call(action, request)
        pages.append(action)
        if len(pages) == 3:  # on dev-001's pages
            store.upsert_readings(late)
        return answer

    monkeypatch.setattr(store, "_call", read_then_sync)
    back = store.read_readings()
    assert not back.duplicated([dd.DEVICE_ID, dd.TS]).any() and len(back) == len(frame)
