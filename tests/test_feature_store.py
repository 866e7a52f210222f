"""The feature job against real cloud stores (embedded SQLite and the Postgres server of
DATABASE_URL): incremental runs equal a rebuild, reruns change nothing, runs are recorded,
``--status``, and the CLI's modes, one-line errors and exit codes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

import run_feature_engineering
from cloud.feature_engineering import workers
from cloud.feature_engineering.job import (
    JOB,
    NO_SITE_ROW,
    run_features,
    watermark_source,
)
from cloud.feature_engineering.pipeline import feature_names
from cloud.feature_engineering.settings import FeatureSettings
from cloud.feature_engineering.status import feature_status
from cloud.store import migrations
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core import der_data as dd
from der_core.cli_support import run_cli
from der_core.config import SimulatorConfig, site_record
from der_core.errors import ConfigError, StoreError
from der_core.sites import site_configs
from tests.conftest import in_ci
from tests.pg_fixtures import server_url, with_dbname
from tests.sim_helpers import readings as simulated

ROOT = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2024-06-01T00:00:00Z")
DAYS = 9
END = START + pd.Timedelta(days=DAYS)
OUTAGE = (START + pd.Timedelta(days=5, hours=10), START + pd.Timedelta(days=5, hours=13))  # 3 h without readings
SETTINGS = FeatureSettings(lookback_days=30, batch_size=500)


@pytest.fixture(scope="module")
def fleet():
    configs = site_configs(SimulatorConfig(seed=21, device_id="home"), 2)
    raw = simulated(configs, str(START), str(END))
    outage = ((raw[dd.DEVICE_ID] == configs[1].device_id) & (raw[dd.TS] > OUTAGE[0]) & (raw[dd.TS] <= OUTAGE[1]))
    return configs, raw[~outage.to_numpy()].reset_index(drop=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_store(request, tmp_path):
    """Make empty cloud stores of one kind; Postgres ones each get a throw-away database."""
    opened, databases = [], []

    def make():
        if request.param == "sqlite":
            store = SQLiteCloudStore(tmp_path / f"cloud-{len(opened)}.db")
        else:
            from cloud.store.postgres import PostgresCloudStore

            store = PostgresCloudStore(_create_database(databases))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    for name in databases:
        with psycopg.connect(server_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_database(databases: list[str]) -> str:
    try:
        conn = psycopg.connect(server_url(), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[0]
        if in_ci():
            pytest.fail(f"PostgreSQL required in CI: {reason}")
        pytest.skip(f"PostgreSQL not reachable ({reason}); set DATABASE_URL to run these tests")
    name = f"der_fe_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    databases.append(name)
    return with_dbname(server_url(), name)


def load(store, configs, raw, start=None, stop=None):
    store.upsert_sites([site_record(c) for c in configs])
    ts = raw[dd.TS]
    keep = (ts >= (start if start is not None else ts.min())) & (ts < (stop if stop is not None else END))
    store.upsert_readings(raw[keep])


def feature_table(store) -> pd.DataFrame:
    table = s.unpack_features(store.read_frame(s.FEATURES))
    return table.sort_values([dd.DEVICE_ID, dd.TS, s.VERSION]).reset_index(drop=True)


def test_incremental_day_by_day_equals_a_rebuild_from_scratch(new_store, fleet):
    configs, raw = fleet
    daily, rebuilt = new_store(), new_store()
    read_per_run = []
    for day in range(DAYS):
        load(daily, configs, raw, START + pd.Timedelta(days=day), START + pd.Timedelta(days=day + 1))
        read_per_run.append(run_features(daily, SETTINGS, now=START + pd.Timedelta(days=day + 1)).readings)
    load(rebuilt, configs, raw)
    once = run_features(rebuilt, SETTINGS, now=END)
    incremental, scratch = feature_table(daily), feature_table(rebuilt)
    assert once.rows == len(scratch) == len(incremental) > 0
    assert set(scratch.columns) == {dd.DEVICE_ID, dd.TS, s.VERSION, *feature_names(SETTINGS.rolling_window_days)}
    # Exact, not merely close: every feature at T is computed from data anchored in time, never
    # from where a run happened to start.
    pd.testing.assert_frame_equal(incremental, scratch[incremental.columns], check_exact=True)
    # Incremental runs read what is new plus the history, never the whole past again.
    assert read_per_run[-1] < len(raw) * 0.95


def test_readings_arriving_after_a_long_silence_get_every_feature_row(new_store, fleet):
    """A gateway back after weeks offline, or a second meter file imported later, brings more
    new readings than the lookback window holds: the run writes features for all of them, from
    its watermark on, as a rebuild from scratch over the same span has them; not only the
    window's worth counted back from the newest."""
    configs, raw = fleet
    short = FeatureSettings(lookback_days=2, batch_size=500)
    later, rebuilt = new_store(), new_store()
    load(later, configs, raw, stop=START + pd.Timedelta(days=3))
    run_features(later, short, now=START + pd.Timedelta(days=3))
    load(later, configs, raw)  # six more days at once, three times the lookback
    run_features(later, short, now=END)
    load(rebuilt, configs, raw)
    run_features(rebuilt, FeatureSettings(lookback_days=DAYS, batch_size=500), now=END)
    incremental, scratch = feature_table(later), feature_table(rebuilt)
    first = incremental[dd.TS].min()
    assert pd.Timestamp(first) <= START + pd.Timedelta(days=1, minutes=15)  # the first run's window
    pd.testing.assert_frame_equal(incremental, scratch[scratch[dd.TS] >= first].reset_index(drop=True)[incremental.columns],
                                  check_exact=True)


def test_a_site_without_a_load_meter_has_its_load_features_from_its_balance(new_store, fleet):
    """Readings of PV, battery power and grid flow without the house load (a home's inverter
    and utility meter, no meter of its own load): the features are those of the measured
    load, to the readings' rounding."""
    configs, raw = fleet
    mine = raw[raw[dd.DEVICE_ID] == configs[0].device_id].reset_index(drop=True)
    measured, balanced = new_store(), new_store()
    load(measured, configs[:1], mine)
    load(balanced, configs[:1], mine.assign(**{dd.LOAD_TOTAL: np.nan}))
    for store in (measured, balanced):
        run_features(store, SETTINGS, now=END)
    full, derived = feature_table(measured), feature_table(balanced)
    assert derived["load_kw"].notna().sum() == full["load_kw"].notna().sum() > 0
    pd.testing.assert_frame_equal(derived.drop(columns="load_kwh"), full.drop(columns="load_kwh"), check_exact=False,
                                  atol=5e-3)
    # A step's energy from the balance is its mean over the whole step; a measured reading's, over the time since the
    # reading before it (none for the first, less after a gap): they differ at those steps alone.
    same = np.isclose(derived["load_kwh"], full["load_kwh"], atol=5e-3)
    assert same.mean() > 0.99


def test_a_second_meter_file_of_the_same_days_rewrites_their_features(new_store, fleet, tmp_path):
    """The PV first, features, then the house load of the same days from a second file: the
    import moves the features' watermark back to its first reading, and the next run's table
    is a rebuild's, load features included, not the PV-only rows of the first run."""
    from cloud.sync.importer import ImportOptions, import_file

    configs, raw = fleet
    device = configs[0].device_id
    mine = raw[raw[dd.DEVICE_ID] == device].reset_index(drop=True)
    later, rebuilt = new_store(), new_store()
    load(later, configs[:1], mine.assign(**{dd.LOAD_TOTAL: np.nan}))
    run_features(later, SETTINGS, now=END)
    pv_only = feature_table(later)
    mine[[dd.TS, dd.LOAD_TOTAL]].assign(**{dd.TS: mine[dd.TS].dt.strftime("%Y-%m-%dT%H:%M:%SZ")}).to_csv(
        tmp_path / "load.csv", index=False)
    result = import_file(tmp_path / "load.csv", later, ImportOptions(device))
    assert result.features_rewound == [SETTINGS.version] and result.first_stored == mine[dd.TS].min()
    run_features(later, SETTINGS, now=END)
    load(rebuilt, configs[:1], mine)
    run_features(rebuilt, SETTINGS, now=END)
    incremental, scratch = feature_table(later), feature_table(rebuilt)
    assert not incremental.equals(pv_only)
    pd.testing.assert_frame_equal(incremental, scratch[incremental.columns], check_exact=True)


def test_running_twice_gives_the_same_table_and_only_reprocesses_the_overlap(new_store, fleet):
    configs, raw = fleet
    store = new_store()
    load(store, configs, raw)
    first = run_features(store, SETTINGS, now=END)
    before = feature_table(store)
    second = run_features(store, SETTINGS, now=END)
    pd.testing.assert_frame_equal(feature_table(store), before, check_exact=True)
    steps_per_overlap = int(SETTINGS.reprocess / SETTINGS.step) + 1
    assert 0 < second.rows <= steps_per_overlap * len(configs) < first.rows
    assert store.watermarks(watermark_source(SETTINGS)) == {
        c.device_id: before.loc[before[dd.DEVICE_ID] == c.device_id, dd.TS].max() for c in configs
    }


def test_each_run_is_recorded_with_version_and_rows(new_store, fleet):
    configs, raw = fleet
    store = new_store()
    load(store, configs, raw)
    result = run_features(store, SETTINGS, now=END)
    run = store.last_run(JOB)
    assert (run[s.RUN_ID], run[s.STATUS], run[s.ROWS]) == (result.run_id, "ok", result.rows)
    assert run[s.DETAILS]["version"] == SETTINGS.version == result.version
    assert run[s.DETAILS]["rolling_window_days"] == SETTINGS.rolling_window_days


def test_status_shows_range_rows_gaps_and_version_per_site(new_store, fleet):
    configs, raw = fleet
    store = new_store()
    load(store, configs, raw)
    run_features(store, SETTINGS, now=END)
    status = feature_status(store, SETTINGS)
    by_site = {row[dd.DEVICE_ID]: row for row in status["sites"]}
    table = feature_table(store)
    for config in configs:
        row, mine = by_site[config.device_id], table[table[dd.DEVICE_ID] == config.device_id]
        assert (row["first_ts"], row["last_ts"], row["rows"]) == (mine[dd.TS].min(), mine[dd.TS].max(), len(mine))
        assert row["version"] == SETTINGS.version
    # 3 h without readings: the first hour is carried forward, the other 2 h (8 steps) stay missing.
    outage_site = by_site[configs[1].device_id]
    assert (outage_site["gaps"], outage_site["missing_steps"]) == (1, 8)
    assert outage_site["longest_gap"] == pd.Timedelta(hours=2)
    assert by_site[configs[0].device_id]["gaps"] == 0
    assert status["last_run"][s.STATUS] == "ok" and status["last_error"] is None


def test_site_filter_and_sites_without_metadata(new_store, fleet):
    configs, raw = fleet
    store = new_store()
    load(store, configs, raw)
    stray = raw[raw[dd.DEVICE_ID] == configs[0].device_id].assign(**{dd.DEVICE_ID: "no-site-row"})
    store.upsert_readings(stray)
    only = run_features(store, FeatureSettings(lookback_days=30, site_id=configs[1].device_id), now=END)
    assert [site.device_id for site in only.sites] == [configs[1].device_id]
    assert set(feature_table(store)[dd.DEVICE_ID]) == {configs[1].device_id}
    every = run_features(store, SETTINGS, now=END)
    skipped = {site.device_id: site.skipped for site in every.sites if site.skipped}
    assert skipped == {"no-site-row": NO_SITE_ROW}
    with pytest.raises(ConfigError, match="FE_SITE_ID='nowhere'"):
        run_features(store, FeatureSettings(site_id="nowhere"), now=END)


# how feature rows are stored ---------------------------------------------------------------
def _wide_rows(version: str = "v-test") -> pd.DataFrame:
    """Two rows of awkward floats: 17 significant digits, NaN, infinities, a negative zero."""
    return pd.DataFrame({
        dd.DEVICE_ID: ["a", "a"], dd.TS: [START, START + pd.Timedelta(minutes=15)], s.VERSION: version,
        "x": [0.1 + 0.2, np.nan], "y": [-0.0, 1e-300], "z": [np.inf, -1.2345678901234567e17],
    })


def _stored(store, version: str = "v-test") -> pd.DataFrame:
    return s.unpack_features(store.read_frame(s.FEATURES, {s.VERSION: version}))


@pytest.mark.parametrize("packed", [False, True], ids=["wide", "packed"])
def test_wide_and_packed_writes_read_back_as_the_same_json_objects(new_store, packed):
    store = new_store()
    wide = _wide_rows()
    store.upsert_frame(s.FEATURES, s.pack_features(wide) if packed else wide)
    back = store.read_frame(s.FEATURES, {s.VERSION: "v-test"})
    assert back[dd.TS].tolist() == wide[dd.TS].tolist()
    assert [sorted(f) for f in back[s.FEATURES_COLUMN]] == [["x", "y", "z"]] * 2
    assert back[s.FEATURES_COLUMN].iloc[0]["z"] is None  # infinity is not JSON: null, as NaN is
    assert back[s.FEATURES_COLUMN].iloc[1]["x"] is None


def test_a_wide_write_keeps_the_last_row_of_a_repeated_key(new_store):
    store = new_store()
    wide = pd.concat([_wide_rows(), _wide_rows().assign(x=[7.5, 8.5]).iloc[:1]], ignore_index=True)
    assert store.upsert_frame(s.FEATURES, wide) == 2
    assert _stored(store)["x"].tolist()[0] == 7.5


def test_sqlite_keeps_wide_float_features_exactly(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        wide = _wide_rows()
        store.upsert_frame(s.FEATURES, wide)
        back = _stored(store)
    finite = wide[["x", "y", "z"]].where(np.isfinite(wide[["x", "y", "z"]]))
    np.testing.assert_array_equal(back[["x", "y", "z"]].to_numpy(), finite.to_numpy())  # bit for bit, not 15 digits


def test_sqlite_file_with_json_feature_rows_opens_and_mixes_with_compact_rows(tmp_path):
    """A cloud.db from before the compact encoding (JSON text, no layouts table) still reads,
    and rewriting some of its rows the new way leaves the table whole."""
    path = tmp_path / "cloud.db"
    with SQLiteCloudStore(path) as store:
        store._conn.execute(f"DROP TABLE {migrations.FEATURE_LAYOUTS}")
        store.upsert_frame(s.FEATURES, s.pack_features(_wide_rows()))
    with SQLiteCloudStore(path) as store:
        old = _stored(store)
        store.upsert_frame(s.FEATURES, _wide_rows().iloc[1:])
        kinds = [row[0] for row in store._conn.execute(f"SELECT typeof({s.FEATURES_COLUMN}) FROM {s.FEATURES} "
                                                       f"ORDER BY {dd.TS}")]
        mixed = _stored(store)
    assert kinds == ["text", "blob"]
    pd.testing.assert_frame_equal(mixed, old, check_exact=False, rtol=1e-14)


def test_sqlite_drops_the_index_its_primary_key_already_provides(tmp_path):
    path, old = tmp_path / "cloud.db", "der_features_device_id_ts_idx"
    with SQLiteCloudStore(path) as store:
        store._conn.execute(f"CREATE INDEX {old} ON {s.FEATURES} ({dd.DEVICE_ID}, {dd.TS})")  # as files had
    with SQLiteCloudStore(path) as store:
        indexes = {row[0] for row in store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        plan = " ".join(row[-1] for row in store._conn.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM {s.FEATURES} WHERE {dd.DEVICE_ID} = 'a' AND {dd.TS} >= 0 "
            f"ORDER BY {dd.DEVICE_ID}, {dd.TS}, {s.VERSION}"))
    assert old not in indexes
    assert "sqlite_autoindex_der_features_1" in plan and "TEMP B-TREE" not in plan


def test_sqlite_features_that_are_not_all_floats_stay_json(tmp_path):
    wide = _wide_rows().assign(flag=[True, False], count=[1, 2])
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        store.upsert_frame(s.FEATURES, wide)
        kind = store._conn.execute(f"SELECT DISTINCT typeof({s.FEATURES_COLUMN}) FROM {s.FEATURES}").fetchall()
        first = store.read_frame(s.FEATURES)[s.FEATURES_COLUMN].iloc[0]
    assert kind == [("text",)] and first["flag"] is True and first["count"] == 1


class FailingWrites:
    """A real store whose feature writes fail, as a full disk or a lost server would."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert_frame(self, table, frame):
        raise StoreError(f"{self.inner.label}: upsert into {table} failed (disk full)")


def test_a_failed_run_is_recorded_and_moves_no_watermark(new_store, fleet):
    configs, raw = fleet
    store = new_store()
    load(store, configs, raw)
    with pytest.raises(StoreError, match="disk full"):
        run_features(FailingWrites(store), SETTINGS, now=END)
    run = store.last_run(JOB)
    assert run[s.STATUS] == "failed" and "disk full" in run[s.ERROR]
    assert store.watermarks(watermark_source(SETTINGS)) == {}


class FailsOnSite:
    """A real store whose feature writes fail for one site only."""

    def __init__(self, inner, device):
        self.inner, self.device = inner, device

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert_frame(self, table, frame):
        if table == s.FEATURES and (frame[dd.DEVICE_ID] == self.device).any():
            raise StoreError(f"{self.inner.label}: upsert into {table} failed (disk full)")
        return self.inner.upsert_frame(table, frame)


def test_a_write_failing_after_the_first_site_keeps_what_was_stored_before_it(new_store, fleet):
    configs, raw = fleet
    store = new_store()
    load(store, configs, raw)
    first, second = (c.device_id for c in configs)
    with pytest.raises(StoreError, match="disk full"):
        run_features(FailsOnSite(store, second), SETTINGS, now=END)
    stored = feature_table(store)
    assert set(stored[dd.DEVICE_ID]) == {first}
    assert set(store.watermarks(watermark_source(SETTINGS))) == {first}
    assert store.last_run(JOB)[s.ROWS] == len(stored)


LINGER_S = 1.0


class OneCallAtATime:
    """A real store that records each call (thread and method, in order) and how many calls
    ever ran at the same time. A feature write lingers until another thread calls the store
    (or LINGER_S passes), so a read that would overlap a write is caught every time rather
    than when the timing happens to allow it."""

    def __init__(self, inner):
        self.inner, self.active, self.most, self.calls = inner, 0, 0, []
        self.lock = threading.Lock()

    def __getattr__(self, name):
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def counted(*args, **kwargs):
            me = threading.current_thread().name
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
                self.calls.append((me, name))
                seen = len(self.calls)
            try:
                if name == "upsert_frame":
                    self._linger(me, seen)
                return method(*args, **kwargs)
            finally:
                with self.lock:
                    self.active -= 1
        return counted

    def _linger(self, me: str, seen: int) -> None:
        deadline = time.monotonic() + LINGER_S
        while time.monotonic() < deadline:
            with self.lock:
                if any(thread != me for thread, _ in self.calls[seen:]):
                    return
            time.sleep(0.005)


@pytest.fixture(scope="module")
def fleet_of_three():
    """Three sites: the fewest with a read due while an earlier site is being written."""
    configs = site_configs(SimulatorConfig(seed=23, device_id="trio"), 3)
    return configs, simulated(configs, str(START), str(START + pd.Timedelta(days=3)))


def test_the_writer_thread_never_uses_the_store_while_the_job_reads(new_store, fleet_of_three, monkeypatch):
    configs, raw = fleet_of_three
    monkeypatch.setattr(workers, "worker_count", lambda sites: 0)  # the two-thread pipeline
    store = new_store()
    load(store, configs, raw)
    watched = OneCallAtATime(store)
    result = run_features(watched, FeatureSettings(lookback_days=30, batch_size=100_000), now=END)
    writer = [at for at, (thread, _) in enumerate(watched.calls) if thread.startswith("feature-writer")]
    # the race was possible: the job used the store again after the writer thread had started
    assert writer and any(thread == "MainThread" for thread, _ in watched.calls[writer[0]:])
    assert watched.most == 1
    assert [site.device_id for site in result.sites] == [c.device_id for c in configs]
    assert result.rows == len(feature_table(store))


# worker processes ---------------------------------------------------------------------------
@pytest.fixture
def in_workers(monkeypatch):
    """Send even a two-site fleet to two worker processes, whatever the machine."""
    monkeypatch.setattr(workers, "worker_count", lambda sites: 2)


def test_worker_processes_store_the_same_rows_and_none_outlives_the_run(tmp_path, fleet, monkeypatch):
    configs, raw = fleet
    here, there = SQLiteCloudStore(tmp_path / "here.db"), SQLiteCloudStore(tmp_path / "there.db")
    for store in (here, there):
        load(store, configs, raw)
    stray = raw[raw[dd.DEVICE_ID] == configs[0].device_id].assign(**{dd.DEVICE_ID: "no-site-row"})
    there.upsert_readings(stray)
    monkeypatch.setattr(workers, "worker_count", lambda sites: 0)
    local = run_features(here, SETTINGS, now=END)
    monkeypatch.setattr(workers, "worker_count", lambda sites: 2)
    pooled = run_features(there, SETTINGS, now=END)
    assert (local.workers, pooled.workers) == (0, 2)
    assert multiprocessing.active_children() == []
    assert [site.device_id for site in pooled.sites] == [*(c.device_id for c in configs), "no-site-row"]
    assert pooled.sites[-1].skipped == NO_SITE_ROW
    assert (pooled.rows, pooled.readings) == (local.rows, local.readings)  # a site without a row is not read
    pd.testing.assert_frame_equal(feature_table(there), feature_table(here), check_exact=True)
    assert there.watermarks(watermark_source(SETTINGS)) == here.watermarks(watermark_source(SETTINGS))
    here.close(), there.close()


def test_an_error_in_a_worker_process_fails_the_run_after_the_sites_before_it(tmp_path, fleet, in_workers):
    configs, raw = fleet
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        load(store, configs, raw)
        broken = {**site_record(configs[1]), "pv_capacity_kw": -3.0}
        store.upsert_sites([broken])
        with pytest.raises(ConfigError, match=f"site {configs[1].device_id}: capacity_kw"):
            run_features(store, SETTINGS, now=END)
        assert set(store.watermarks(watermark_source(SETTINGS))) == {configs[0].device_id}
        run = store.last_run(JOB)
    assert run[s.STATUS] == "failed" and "capacity_kw" in run[s.ERROR]
    assert multiprocessing.active_children() == []


def test_a_write_failing_while_workers_compute_stops_them(tmp_path, fleet, in_workers):
    configs, raw = fleet
    with SQLiteCloudStore(tmp_path / "cloud.db") as store:
        load(store, configs, raw)
        with pytest.raises(StoreError, match="disk full"):
            run_features(FailsOnSite(store, configs[1].device_id), SETTINGS, now=END)
        assert set(feature_table(store)[dd.DEVICE_ID]) == {configs[0].device_id}
    assert multiprocessing.active_children() == []


def _worker_pids_of_a_killed_job(how: str) -> list[int]:
    """Start a job process with two workers, kill it and return its workers' process ids.
    ``"sigterm"``: a plain script's SIGTERM, no clean-up runs. ``"sigkill"``: the job handles
    SIGTERM as every command does (``run_cli``) and is killed outright while both workers are
    inside a task, where a handler inherited from the job would be caught as the task's error."""
    script = (
        "import os, signal, sys, time\n"
        "from cloud.feature_engineering import workers\n"
        "from der_core import cli_support\n"
        f"if {how == 'sigkill'}:\n"
        "    signal.signal(signal.SIGTERM, cli_support._terminate)\n"
        "def pid(_):\n"
        "    time.sleep(0.2)\n"
        "    return os.getpid()\n"
        "with workers.pool(dict, 2) as pool:\n"
        "    pids = sorted(set(pool.map(pid, range(4))))\n"
        "    busy = [pool.submit(time.sleep, 60) for _ in pids]\n"
        "    time.sleep(0.5)\n"
        "    print(*pids, flush=True)\n"
        "    time.sleep(60)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pids = [int(p) for p in job.stdout.readline().split()]
    finally:
        job.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        job.wait(timeout=30)
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel ends the workers on Linux only")
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_workers_end_with_a_job_killed(how):
    pids = _worker_pids_of_a_killed_job(how)
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(map(_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _running(pid)]


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sites, cores, expected", [(1, 8, 0), (workers.PROCESS_MIN_SITES, 1, 0),
                                                    (workers.PROCESS_MIN_SITES, 2, 2), (500, 64, workers.MAX_WORKERS)])
def test_worker_count_leaves_small_fleets_and_single_cores_alone(monkeypatch, sites, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert workers.worker_count(sites) == expected


# the CLI ----------------------------------------------------------------------------------
def _clean_env(monkeypatch, tmp_path):
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "DATABASE_URL", "FE_SITE_ID", "FE_BATCH_SIZE",
                 "FE_ROLLING_WINDOW_DAYS", "FE_LOOKBACK_DAYS", "FE_STEP_MINUTES", "FE_MAX_GAP_MINUTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_cli_once_then_status_json(tmp_path, monkeypatch, capsys, fleet):
    _clean_env(monkeypatch, tmp_path)
    configs, raw = fleet
    with SQLiteCloudStore(tmp_path / "data" / "cloud.db") as store:
        load(store, configs, raw)
    monkeypatch.setenv("FE_ROLLING_WINDOW_DAYS", "3")
    assert run_cli(run_feature_engineering.main, ["--once", "--lookback-days", "5000"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "fe2-step15m-roll3d-gap60m" in out and "for 2 sites" in out
    assert run_cli(run_feature_engineering.main, ["--status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["version"] == "fe2-step15m-roll3d-gap60m" and status["last_run"]["status"] == "ok"
    assert [row["device_id"] for row in status["sites"]] == [c.device_id for c in configs]
    assert all(row["rows"] > 0 for row in status["sites"])


@pytest.mark.parametrize("args, env, code, message", [
    ([], {}, 2, "nothing to do"),
    (["--once", "--status"], {}, 2, "not allowed with argument"),
    (["--once", "--lookback-days", "0"], {}, 2, "'0' is not a positive whole number of days"),
    (["--continuous", "--interval", "-5"], {}, 2, "'-5' is not a positive number of seconds"),
    # Beyond a year a schedule is no schedule, and beyond a century no date counts back.
    (["--continuous", "--interval", "inf"], {}, 2, "every inf s: expected a positive interval of at most 31,622,400 s"),
    (["--continuous", "--interval", "1e308"], {}, 2, "every 1e+308 s: expected a positive interval of at most"),
    (["--once", "--lookback-days", str(10**30)], {}, 2, "days: expected at most 36,500 (a century"),
    (["--once"], {"FE_LOOKBACK_DAYS": "40000"}, 2, "lookback 40,000 days: expected at most 36,500"),
    (["--once"], {"FE_BATCH_SIZE": "lots"}, 2, "FE_BATCH_SIZE='lots': expected a positive whole number"),
    (["--once"], {"FE_ROLLING_WINDOW_DAYS": "0"}, 2, "FE_ROLLING_WINDOW_DAYS='0'"),
    (["--once"], {"FE_LOOKBACK_DAYS": "-1"}, 2, "FE_LOOKBACK_DAYS='-1'"),
    (["--once"], {"FE_STEP_MINUTES": "7"}, 2,
     "environment variable FE_STEP_MINUTES='7': expected a whole number of minutes that divides a day (1440)"),
    (["--once"], {"FE_STEP_MINUTES": "0"}, 2, "environment variable FE_STEP_MINUTES='0': expected a whole number"),
    (["--once"], {"FE_MAX_GAP_MINUTES": "-1"}, 2, "environment variable FE_MAX_GAP_MINUTES='-1': expected a whole number"),
    # Past a century no date counts back: a window or a gap that long would overflow, not run.
    (["--once"], {"FE_MAX_GAP_MINUTES": str(10**15)}, 2,
     f"FE_MAX_GAP_MINUTES='{10**15}': expected a whole number of minutes up to 52,560,000 (a century)"),
    (["--once"], {"FE_ROLLING_WINDOW_DAYS": str(10**12)}, 2,
     f"FE_ROLLING_WINDOW_DAYS='{10**12}': expected a positive whole number of days up to 36,500 (a century)"),
    (["--once"], {"FE_SITE_ID": "nowhere"}, 2, "FE_SITE_ID='nowhere': no readings or site row"),
    (["--status"], {"FE_SITE_ID": "nowhere"}, 2, "FE_SITE_ID='nowhere': no readings or site row"),
    (["--once"], {"SUPABASE_URL": "https://x.supabase.co"}, 2, "SUPABASE_KEY is not set"),
    (["--once", "--interval", "5"], {}, 2, "--interval is the period of --continuous; expected it with --continuous"),
    (["--status", "--interval", "5"], {}, 2, "--interval is the period of --continuous"),
    (["--once", "--json"], {}, 2, "--json prints --status as JSON; expected it with --status"),
])
def test_cli_bad_input_is_one_line_and_exit_code(tmp_path, monkeypatch, capsys, args, env, code, message):
    _clean_env(monkeypatch, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        status = run_cli(run_feature_engineering.main, args)
    except SystemExit as exit_:  # argparse's own errors leave through SystemExit
        status = exit_.code
    assert status == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--once"], ["--status"]])
def test_cli_spec_commands_work_as_written_on_an_empty_store(tmp_path, args):
    done = subprocess.run([sys.executable, str(ROOT / "run_feature_engineering.py"), *args, "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert ("wrote 0 feature rows" in done.stdout) if args == ["--once"] else ("last run: none" in done.stdout)


def test_cli_unreachable_server_exits_1_without_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    done = subprocess.run([sys.executable, str(ROOT / "run_feature_engineering.py"), "--once"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "Traceback" not in done.stderr
