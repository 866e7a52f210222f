import multiprocessing as mp
import sqlite3

import numpy as np
import pandas as pd
import pytest

from der_core import der_data as dd
from der_core.config import site_record
from edge_gateway.stores.base import EdgeStore
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.sim_helpers import config, readings


@pytest.fixture
def day():
    return readings([config(seed=1), config(seed=2, device_id="b")], "2024-06-15", "2024-06-16")


def test_is_an_edge_store_in_wal_mode(tmp_path):
    store = SQLiteEdgeStore(tmp_path / "edge.db")
    assert isinstance(store, EdgeStore)
    assert sqlite3.connect(tmp_path / "edge.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_round_trip_is_exact(tmp_path, day):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        assert store.write(day) == len(day)
        back = store.read_range(None)
        expected = dd.coerce_frame(day).sort_values([dd.DEVICE_ID, dd.TS], ignore_index=True)
        pd.testing.assert_frame_equal(back, expected, check_exact=True)
        assert store.devices() == ["b", "edge-gateway-001"]
        assert store.count("b") == 288


def test_writes_are_idempotent(tmp_path, day):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.write(day)
        store.write(day.iloc[:10])
        assert store.count() == len(day)


@pytest.mark.parametrize(
    "start,stop,expected",
    [(None, None, 288), ("2024-06-15 12:00", None, 144), (None, "2024-06-15 01:00", 12), ("2024-06-15 01:00", "2024-06-15 02:00", 12)],
)
def test_range_reads_are_half_open(tmp_path, day, start, stop, expected):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.write(day)
        start = pd.Timestamp(start, tz="UTC") if start else None
        stop = pd.Timestamp(stop, tz="UTC") if stop else None
        assert len(store.read_range("b", start, stop)) == expected
        assert store.count("b", start) == (288 if start is None else len(store.read_range("b", start)))


def test_latest_and_limit(tmp_path, day):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.write(day)
        assert store.latest("b")[dd.TS].item() == pd.Timestamp("2024-06-15 23:55", tz="UTC")
        assert len(store.read_range(None, limit=5)) == 5
        assert store.latest("nobody").empty


def test_sites_are_stored(tmp_path):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.put_site(site_record(config(device_id="x", home_load={"has_ev": False})))
        (site,) = store.sites()
        assert site["device_id"] == "x" and site["has_ev"] is False and site["pv_capacity_kw"] == 10.0


def _writer(path, frames):
    store = SQLiteEdgeStore(path)
    for frame in frames:
        store.write(frame)
    store.close()


def test_a_reader_process_never_blocks_or_sees_partial_batches(tmp_path, day):
    path = tmp_path / "edge.db"
    SQLiteEdgeStore(path).close()
    batches = [day.iloc[i : i + 48] for i in range(0, len(day), 48)]
    writer = mp.get_context("spawn").Process(target=_writer, args=(path, batches))
    writer.start()
    reader = SQLiteEdgeStore(path)
    seen = []
    while writer.is_alive():
        seen.append(reader.count())
    writer.join()
    seen.append(reader.count())
    assert writer.exitcode == 0
    assert all(n % 48 == 0 for n in seen)  # each batch is one transaction
    assert seen == sorted(seen) and seen[-1] == len(day)


def test_rows_convert_the_same_with_numeric_columns_as_one_block_or_one_by_one():
    from edge_gateway.stores.sqlite import frame_from_rows

    numeric = list(dd.NUMERIC_COLUMNS)
    block_order = [dd.TS, *numeric, *dd.TEXT_COLUMNS, dd.DEVICE_ID]
    scattered = [dd.DEVICE_ID, *dd.TEXT_COLUMNS, numeric[0], dd.TS, *numeric[1:]]  # no numeric run: column by column
    rng = np.random.default_rng(3)
    rows = []
    for k in range(50):
        values = {name: float(rng.uniform(-5, 5)) for name in numeric}
        values.update({dd.INT_COLUMNS[0]: k, numeric[1]: None if k % 7 == 0 else values[numeric[1]]})
        if k % 11 == 0:
            values[dd.INT_COLUMNS[0]] = None  # imported data may lack integer fields too
        values.update({dd.TS: 1_700_000_000_000_000 + k * 300_000_000, dd.DEVICE_ID: "dev-1"})
        values.update({name: "peak" for name in dd.TEXT_COLUMNS})
        rows.append(values)
    block = frame_from_rows([tuple(r[n] for n in block_order) for r in rows], block_order)
    one_by_one = frame_from_rows([tuple(r[n] for n in scattered) for r in rows], scattered)
    pd.testing.assert_frame_equal(block, one_by_one)
    assert block[numeric[1]].isna().sum() == 8 and block[dd.INT_COLUMNS[0]].isna().sum() == 5


def test_a_store_from_before_the_late_write_notes_knows_each_devices_newest_on_opening(tmp_path, day):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.write(day.iloc[100:])
    with sqlite3.connect(tmp_path / "edge.db") as raw:  # as such a file was
        raw.execute("DROP TABLE edge_newest")
        raw.execute("DROP TABLE late_writes")
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.write(day.iloc[:100])  # a backfill behind the newest readings already there
        late, _ = store.late_writes()
        first = day.iloc[:100]
        assert late == {first[dd.DEVICE_ID].iloc[0]: [(first[dd.TS].min(), first[dd.TS].max())]}


def test_late_write_notes_merge_where_they_overlap_and_old_notes_reach_the_newest(tmp_path, day):
    device, stamps = day[dd.DEVICE_ID].iloc[0], day[dd.TS]
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.write(day.iloc[200:])
        for rows in (slice(0, 10), slice(50, 60), slice(55, 70)):  # three backfills, two overlapping
            store.write(day.iloc[rows])
        late, through = store.late_writes()
        assert late == {device: [(stamps[0], stamps[9]), (stamps[50], stamps[69])]} and through == 3
    with sqlite3.connect(tmp_path / "edge.db") as raw:  # as a file from before ranges were kept
        raw.execute("CREATE TABLE old AS SELECT seq, device_id, since_us FROM late_writes")
        raw.execute("DROP TABLE late_writes")
        raw.execute("ALTER TABLE old RENAME TO late_writes")
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        assert store.late_writes()[0] == {device: [(stamps[0], None)]}  # no last stamp known: up to the newest
