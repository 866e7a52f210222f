"""The sync job (edge store -> cloud store): watermarks, overlap, batches, validation,
retries, pipeline runs, status and the CLI's one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import run_cloud_sync
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.job import JOB, SyncSettings, sync_once
from cloud.sync.retry import RetryPolicy
from cloud.sync.status import sync_status
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.config import build_config, site_record
from der_core.errors import StoreError, StoreUnavailable
from der_core.site_file import build_site, declared_site, site_row
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.pg_fixtures import pg_url, truncate_all  # noqa: F401  (fixture)
from tests.sync_fixtures import assert_same_readings, readings, site
from tests.test_site_file import SITE as SITE_FILE

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "edge:sqlite"


@pytest.fixture
def edge(tmp_path):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        yield store


@pytest.fixture
def cloud(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        yield store


def settings(batch_size=1000, sleeps=None, attempts=5) -> SyncSettings:
    sleeps = [] if sleeps is None else sleeps
    policy = RetryPolicy(attempts=attempts, base_s=0.5, cap_s=4.0, rng=np.random.default_rng(7), sleep=sleeps.append)
    return SyncSettings(source=SOURCE, batch_size=batch_size, retry=policy)


class FlakyCloud:
    """A real cloud store whose ``upsert_readings`` raises the queued errors first."""

    def __init__(self, inner, errors):
        self.inner, self.errors, self.upserts = inner, list(errors), 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert_readings(self, frame):
        self.upserts += 1
        if self.errors and self.errors[0] is not None:
            raise self.errors.pop(0)
        if self.errors:
            self.errors.pop(0)
        return self.inner.upsert_readings(frame)


@pytest.mark.parametrize("batch_size", [1, 7, 10, 100_000])
def test_first_sync_copies_every_reading_and_the_sites(edge, cloud, batch_size):
    frame = readings(devices=3, steps=10)
    edge.write(frame)
    edge.put_site(site("dev-000"))
    result = sync_once(edge, cloud, settings(batch_size))
    assert (result.rows_synced, result.devices, result.sites) == (30, 3, 1)
    assert_same_readings(cloud.read_readings(), frame)
    assert [x["device_id"] for x in cloud.sites()] == ["dev-000"]
    assert cloud.watermarks(SOURCE) == {d: frame[dd.TS].max() for d in frame[dd.DEVICE_ID].unique()}
    run = cloud.last_run(JOB)
    assert (run[s.STATUS], run[s.ROWS], run[s.RUN_ID]) == ("ok", 30, result.run_id)


def test_next_sync_sends_only_the_overlap_and_new_rows(edge, cloud):
    frame = readings(devices=1, steps=48, step_s=300)
    edge.write(frame.iloc[:40])
    sync_once(edge, cloud, settings())
    edge.write(frame.iloc[40:])
    result = sync_once(edge, cloud, settings())
    # 15 minutes of overlap at 5-minute steps: the last 4 confirmed rows again, then 8 new.
    assert result.rows_synced == 4 + 8
    assert_same_readings(cloud.read_readings(), frame)


def test_late_row_inside_the_overlap_is_picked_up(edge, cloud):
    frame = readings(devices=1, steps=12)
    late = frame.index[-2]
    edge.write(frame.drop(index=late))
    sync_once(edge, cloud, settings())
    edge.write(frame.loc[[late]])
    sync_once(edge, cloud, settings())
    assert_same_readings(cloud.read_readings(), frame)


def test_a_day_backfilled_behind_the_watermark_reaches_the_cloud(edge, cloud):
    frame = readings(devices=2, steps=2 * 288)  # two days at 5 minutes
    first_day = frame[dd.TS] < frame[dd.TS].min() + pd.Timedelta(days=1)
    edge.write(frame[~first_day])
    sync_once(edge, cloud, settings())
    assert edge.late_writes() == ({}, 0)  # written in order: nothing behind the watermark
    edge.write(frame[first_day])
    late, _ = edge.late_writes()
    day_stamps = frame.loc[first_day, dd.TS]
    assert late == {d: [(day_stamps.min(), day_stamps.max())] for d in ("dev-000", "dev-001")}
    result = sync_once(edge, cloud, settings())
    assert_same_readings(cloud.read_readings(), frame)
    assert edge.late_writes() == ({}, 0)  # acknowledged: the next run reads only the overlap again
    overlap = 2 * 4  # 15 minutes of 5-minute readings before each watermark
    assert result.rows_synced == first_day.sum() + overlap  # the backfilled day alone, not the day after it again
    assert sync_once(edge, cloud, settings()).rows_synced == overlap


def test_a_late_write_during_a_run_is_not_acknowledged_by_it(edge, cloud):
    frame = readings(devices=1, steps=200)
    edge.write(frame.iloc[100:])
    sync_once(edge, cloud, settings())
    edge.write(frame.iloc[50:100])

    class WritesBehindMidRun:
        """The cloud, while a gateway backfills more of the past between two of its batches."""

        def __getattr__(self, name):
            return getattr(cloud, name)

        def upsert_readings(self, batch):
            if not edge.count(start=None) == len(frame):
                edge.write(frame.iloc[:50])
            return cloud.upsert_readings(batch)

    sync_once(edge, WritesBehindMidRun(), settings())
    late, _ = edge.late_writes()
    assert late == {"dev-000": [(frame[dd.TS].iloc[0], frame[dd.TS].iloc[49])]}  # the run read rows 50-99: this note stays
    sync_once(edge, cloud, settings())
    assert_same_readings(cloud.read_readings(), frame)
    assert edge.late_writes() == ({}, 0)


def test_bad_rows_are_quarantined_with_reasons_and_do_not_block_others(edge, cloud):
    frame = readings(devices=2, steps=10)
    frame.loc[3, dd.BATTERY_SOC] = 140.0
    frame.loc[15, dd.PRICE] = np.nan
    edge.write(frame)
    result = sync_once(edge, cloud, settings(batch_size=4))
    assert (result.rows_synced, result.rows_quarantined) == (18, 2)
    assert_same_readings(cloud.read_readings(), frame.drop(index=[3, 15]))
    reasons = cloud.read_quarantine().set_index(dd.TS)[s.REASON]
    assert reasons[frame[dd.TS][3]] == "battery_soc_percent outside [0, 100] (got 140.0)"
    assert reasons[frame[dd.TS][15]] == "grid_price_price_per_kwh is missing (NaN) but required"
    assert cloud.watermarks(SOURCE)["dev-000"] == frame[dd.TS].max()


def test_a_real_devices_readings_keep_what_it_does_not_measure_as_gaps(edge, cloud):
    """A battery inverter read over Modbus measures no weather and no price: its readings hold
    those fields empty and are synced, where every one was quarantined as a damaged
    simulated reading; a value it did measure out of range is still quarantined."""
    config = build_config({"device_id": "dev-000", "source": {"kind": "modbus-sunspec", "host": "127.0.0.1"}})
    edge.put_site(site_record(config))
    frame = readings(devices=2, steps=6)
    unmeasured = [dd.SOLAR_IRRADIANCE, dd.PANEL_TEMP, dd.PRICE, dd.FEED_IN, *dd.LOAD_COMPONENTS]
    device = frame[dd.DEVICE_ID] == "dev-000"
    frame.loc[device, unmeasured] = np.nan
    frame.loc[frame.index[device][2], dd.BATTERY_SOC] = 140.0
    frame.loc[frame.index[device][3], dd.SOLAR_KW] = -0.004  # the inverter's night draw: no generation, row kept
    frame.loc[frame.index[~device][0], dd.PRICE] = np.nan  # the simulated device still writes every field
    edge.write(frame)
    result = sync_once(edge, cloud, settings())
    assert (result.rows_synced, result.rows_quarantined) == (10, 2)
    reasons = sorted(cloud.read_quarantine()[s.REASON])
    assert reasons == ["battery_soc_percent outside [0, 100] (got 140.0)", "grid_price_price_per_kwh is missing (NaN) but required"]
    stored = cloud.read_readings("dev-000")
    assert len(stored) == 5 and stored[unmeasured].isna().all().all()
    assert stored.set_index(dd.TS).loc[frame.loc[frame.index[device][3], dd.TS], dd.SOLAR_KW] == 0.0
    kinds = {row[dd.DEVICE_ID]: row["site"] for row in sync_status(edge, cloud, SOURCE)["devices"]}
    assert kinds == {"dev-000": "device", "dev-001": "none"}  # the status says which the device is


def test_transient_errors_are_retried_with_growing_jittered_backoff(edge, cloud):
    edge.write(readings(devices=1, steps=10))
    sleeps: list[float] = []
    flaky = FlakyCloud(cloud, [StoreUnavailable("down")] * 3)
    sync_once(edge, flaky, settings(sleeps=sleeps))
    assert cloud.count_readings() == 10 and flaky.upserts == 4
    assert len(sleeps) == 3 and all(0 <= wait <= 0.5 * 2**i for i, wait in enumerate(sleeps))
    assert len(set(sleeps)) == 3  # jittered, not a fixed ladder


def test_watermark_stays_behind_an_unconfirmed_batch(edge, cloud):
    frame = readings(devices=1, steps=10)
    edge.write(frame)
    # The third batch fails for good: the run fails, is recorded, and the watermark marks batch two.
    flaky = FlakyCloud(cloud, [None, None, StoreError("rejected")])
    with pytest.raises(StoreError, match="rejected"):
        sync_once(edge, flaky, settings(batch_size=3))
    assert cloud.watermarks(SOURCE) == {"dev-000": frame[dd.TS][5]}
    assert cloud.count_readings() == 6
    run = cloud.last_run(JOB)
    assert (run[s.STATUS], run[s.ROWS], run[s.ERROR]) == ("failed", 6, "rejected")
    sync_once(edge, cloud, settings(batch_size=3))
    assert_same_readings(cloud.read_readings(), frame)


def test_retries_give_up_after_the_last_attempt(edge, cloud):
    edge.write(readings(devices=1, steps=3))
    flaky = FlakyCloud(cloud, [StoreUnavailable("down")] * 10)
    with pytest.raises(StoreUnavailable):
        sync_once(edge, flaky, settings(attempts=3))
    assert flaky.upserts == 3 and cloud.last_run(JOB)[s.STATUS] == "failed"


def test_status_reports_per_device_sync_state_and_last_error(edge, cloud):
    frame = readings(devices=2, steps=20)
    edge.write(frame[frame[dd.TS] < frame[dd.TS].min() + pd.Timedelta(minutes=50)])
    sync_once(edge, cloud, settings())
    edge.write(frame)
    with pytest.raises(StoreUnavailable):
        sync_once(edge, FlakyCloud(cloud, [StoreUnavailable("cloud down")] * 9), settings(attempts=1))
    status = sync_status(edge, cloud, SOURCE)
    rows = {d[dd.DEVICE_ID]: d for d in status["devices"]}
    # pending: the ten readings after the watermark, and the ten written again behind it, which the next run sends
    assert rows["dev-001"]["cloud_rows"] == 10 and rows["dev-001"]["pending_edge"] == 20
    assert rows["dev-001"]["lag_s"] == 10 * 300
    assert status["last_run"][s.STATUS] == "failed" and status["last_error"][s.ERROR] == "cloud down"


def test_cli_once_status_json_and_init_db(tmp_path, capsys):
    edge_path, cloud_path = tmp_path / "edge.db", tmp_path / "cloud.db"
    with SQLiteEdgeStore(edge_path) as edge:
        edge.write(readings(devices=2, steps=5))
    common = ["--edge-store", str(edge_path), "--cloud-db", str(cloud_path)]
    assert run_cli(run_cloud_sync.main, ["--once", *common]) == 0
    assert "synced 10 readings of 2 devices (0 quarantined)" in capsys.readouterr().out
    assert run_cli(run_cloud_sync.main, ["--status", "--json", *common]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [d["pending_edge"] for d in status["devices"]] == [0, 0] and status["last_run"]["status"] == "ok"
    assert run_cli(run_cloud_sync.main, ["--init-db", "--cloud-db", str(cloud_path)]) == 0
    assert "cloud schema ready: sqlite:" in capsys.readouterr().out


@pytest.mark.parametrize("args, env, code, message", [
    ([], {}, 2, "nothing to do: expected one of --once, --continuous"),
    (["--once", "--interval", "-3"], {}, 2, "argument --interval: '-3' is not a positive number of seconds"),
    (["--continuous", "--interval", "1e308"], {}, 2, "cloud_sync every 1e+308 s: expected a positive interval of at most "
                                                     "31,622,400 s (a year)"),
    (["--once"], {"SYNC_BATCH_SIZE": "lots"}, 2, "SYNC_BATCH_SIZE='lots': expected a positive whole number"),
    (["--once"], {"SUPABASE_URL": "https://x.supabase.co"}, 2, "SUPABASE_KEY is not set"),
    (["--import", "x.csv"], {}, 2, "--import needs --device-id ID"),
])
def test_cli_bad_input_is_one_line_and_exit_code(tmp_path, monkeypatch, capsys, args, env, code, message):
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL", "INFLUXDB_TOKEN", "SYNC_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_cloud_sync.py", *args])  # run_cli looks for --verbose there
    try:
        status = run_cli(run_cloud_sync.main, args)
    except SystemExit as exit_:  # argparse's own errors leave through SystemExit
        status = exit_.code
    assert status == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_unreachable_cloud_exits_1_without_traceback(tmp_path):
    with SQLiteEdgeStore(tmp_path / "edge.db") as edge:
        edge.write(readings(devices=1, steps=2))
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere", "CI": "true"}
    done = subprocess.run([sys.executable, str(ROOT / "run_cloud_sync.py"), "--once", "--quiet", "--edge-store",
                           str(tmp_path / "edge.db")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: postgres 127.0.0.1:1/nowhere: cannot connect")
    assert "Traceback" not in done.stderr



def test_a_declared_site_is_not_replaced_by_a_gateways_site_row(edge, cloud, caplog):
    declaration = build_site({**SITE_FILE, "device_id": "dev-000"})
    cloud.upsert_sites([site_row(declaration)])
    edge.write(readings(devices=2, steps=4))
    edge.put_site(site("dev-000"))
    edge.put_site(site("dev-001"))
    result = sync_once(edge, cloud, settings())
    rows = {row["device_id"]: row for row in cloud.sites()}
    assert declared_site(rows["dev-000"]) == declaration and declared_site(rows["dev-001"]) is None
    assert result.sites == 1 and "dev-000 is declared in the cloud store" in caplog.text


def test_a_second_edge_store_of_a_device_is_sent_whole(tmp_path, cloud):
    """A gateway's lost store replaced, and the day before backfilled into the new one: the
    new store has its own watermarks, so its older readings are sent, not read from where
    the first store's sync stopped (and left behind for good)."""
    frame = readings(devices=1, steps=20)
    with SQLiteEdgeStore(tmp_path / "first.db") as first:
        first.write(frame.iloc[10:])
        assert sync_once(first, cloud).rows_synced == 10
        source = first.source
    with SQLiteEdgeStore(tmp_path / "second.db") as second:
        second.write(frame.iloc[:10])
        assert second.source != source and second.source.startswith("edge:sqlite:")
        assert sync_once(second, cloud).rows_synced == 10
    assert_same_readings(cloud.read_readings(), frame)
    with SQLiteEdgeStore(tmp_path / "first.db") as first:  # a store keeps its name across opens
        assert first.source == source


def test_a_store_from_before_stores_had_names_keeps_its_watermarks(tmp_path, cloud):
    import sqlite3

    frame = readings(devices=1, steps=10)
    with SQLiteEdgeStore(tmp_path / "old.db") as store:
        store.write(frame)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DROP TABLE edge_store")  # as a store written before the name existed
    with SQLiteEdgeStore(tmp_path / "old.db") as store:
        assert store.source == SOURCE
        cloud.set_watermark(SOURCE, "dev-000", frame[dd.TS].max(), 10)
        assert sync_once(store, cloud).rows_new == 0


def test_a_sync_of_an_edge_store_that_is_not_there_is_one_line(tmp_path, capsys):
    """A mistyped --edge-store: --once says so rather than make an empty store and report 0
    readings synced; --status shows the cloud's side (a site of imported files has no gateway).
    Neither makes a file there."""
    SQLiteCloudStore(tmp_path / "cloud.db").close()
    common = ["--edge-store", str(tmp_path / "edgee.db"), "--cloud-db", str(tmp_path / "cloud.db")]
    assert run_cli(run_cloud_sync.main, ["--once", *common]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--edge-store {tmp_path / 'edgee.db'}: no edge store there; "
                                                    "expected the file a gateway writes (run_simulator.py --store, "
                                                    "default data/edge.db)")
    capsys.readouterr()
    assert run_cli(run_cloud_sync.main, ["--status", *common]) == 0
    assert f"source: none (no edge store at {tmp_path / 'edgee.db'})" in capsys.readouterr().out  # not a made-up name
    assert not (tmp_path / "edgee.db").exists()
    (tmp_path / "edgee.db").touch()  # an empty file is no store either, and is left empty
    assert run_cli(run_cloud_sync.main, ["--once", *common]) == 2
    assert (tmp_path / "edgee.db").stat().st_size == 0


def test_a_damaged_edge_store_is_one_line_not_a_traceback(tmp_path, capsys):
    with SQLiteEdgeStore(tmp_path / "edge.db") as store:
        store.write(readings(devices=3, steps=3000))
    data = bytearray((tmp_path / "edge.db").read_bytes())
    page = 4096
    for at in range(8 * page, len(data) - page, 3 * page):  # leave the header, damage pages through the file
        data[at:at + page] = b"\xa5" * page
    (tmp_path / "edge.db").write_bytes(bytes(data))
    code = run_cli(run_cloud_sync.main, ["--once", "--edge-store", str(tmp_path / "edge.db"),
                                         "--cloud-db", str(tmp_path / "cloud.db")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "edge.db" in err.strip().splitlines()[-1] and "malformed" in err


def test_status_counts_a_day_backfilled_behind_the_watermark_as_pending(edge, cloud):
    """A day written behind the synced readings is sent by the next run: --status says so,
    rather than 0 pending beside a cloud that lacks it."""
    frame = readings(devices=1, steps=40)
    edge.write(frame.iloc[20:])
    sync_once(edge, cloud, settings())
    edge.write(frame.iloc[:15])  # backfilled behind the watermark
    pending = {d["device_id"]: d["pending_edge"] for d in sync_status(edge, cloud, SOURCE)["devices"]}
    assert pending == {"dev-000": 15}
    assert sync_once(edge, cloud, settings()).rows_new == 15
    assert [d["pending_edge"] for d in sync_status(edge, cloud, SOURCE)["devices"]] == [0]


@pytest.mark.parametrize("cloud_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_device_id_no_store_may_hold_is_quarantined_and_the_others_synced(tmp_path, request, cloud_kind):
    """An edge store written by other means holds a device id with a NUL byte, which
    PostgreSQL's text refuses: its readings are quarantined (the NUL shown), and every other
    device's are synced, on this run and the next."""
    import sqlite3

    frame = readings(devices=2, steps=5)
    with SQLiteEdgeStore(tmp_path / "edge.db") as edge:
        edge.write(frame)
    with sqlite3.connect(tmp_path / "edge.db") as conn:
        conn.execute("UPDATE readings SET device_id = 'a' || char(0) || 'b' WHERE device_id = 'dev-000'")
    if cloud_kind == "sqlite":
        cloud = SQLiteCloudStore(tmp_path / "cloud.db")
    else:
        from cloud.store.postgres import PostgresCloudStore

        cloud = PostgresCloudStore(request.getfixturevalue("pg_url"))
    with SQLiteEdgeStore(tmp_path / "edge.db") as edge:
        first, second = sync_once(edge, cloud, settings()), sync_once(edge, cloud, settings())
    assert (first.rows_synced, first.rows_quarantined, second.rows_new, second.rows_quarantined) == (5, 5, 0, 5)
    assert set(cloud.read_readings()[dd.DEVICE_ID]) == {"dev-001"}
    held = cloud.read_quarantine()
    assert set(held[dd.DEVICE_ID]) == {"a\u2400b"} and held[s.REASON].str.startswith("device_id is not valid (got").all()
    cloud.close()


def test_a_copied_edge_store_takes_a_name_of_its_own_and_loses_nothing(tmp_path, cloud, caplog):
    """A gateway's card cloned into a second gateway: the copy names itself anew, so each
    store's sync goes on from its own readings and neither leaves the other's behind."""
    import shutil

    frame = readings(devices=1, steps=30)
    with SQLiteEdgeStore(tmp_path / "a.db") as first:
        first.write(frame.iloc[:10])
        sync_once(first, cloud)
        source = first.source
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    with caplog.at_level("WARNING"), SQLiteEdgeStore(tmp_path / "b.db") as copy:
        assert copy.source != source and "is a copy of another" in caplog.text
        copy.write(frame.iloc[20:])
        sync_once(copy, cloud)
    with SQLiteEdgeStore(tmp_path / "a.db") as first:
        assert first.source == source
        first.write(frame.iloc[10:20])  # behind the copy's newest, ahead of its own watermark
        sync_once(first, cloud)
    assert_same_readings(cloud.read_readings(), frame)
