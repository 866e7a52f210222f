"""The embedded SQLite cloud store: the CloudStore contract plus what is SQLite's own."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from cloud.store import schema as s
from cloud.store.factory import (
    POSTGRES,
    SQLITE,
    SUPABASE,
    cloud_db_choice,
    cloud_settings,
)
from cloud.store.sqlite import SQLiteCloudStore
from der_core.cli_support import run_cli
from der_core.errors import ConfigError, StoreError
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.cloud_store_contract import CloudStoreContract
from tests.sync_fixtures import readings


@pytest.fixture
def store(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud" / "cloud.db") as cloud:
        yield cloud


class TestSQLiteContract(CloudStoreContract):
    pass


def test_schema_is_created_on_first_use_and_data_survives_reopening(tmp_path):
    path = tmp_path / "cloud.db"
    with SQLiteCloudStore(path) as cloud:
        cloud.upsert_readings(readings(devices=1, steps=3))
    with SQLiteCloudStore(path) as cloud:
        cloud.init_schema()
        assert cloud.count_readings() == 3
        names = {r[0] for r in cloud._conn.execute("SELECT name FROM sqlite_master")}
    assert set(s.TABLES) | {s.READING_STATS} <= names


def test_wal_mode(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
        assert cloud._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unwritable_path_is_one_line_store_error(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "cloud.db"
    with pytest.raises(StoreError) as raised:
        SQLiteCloudStore(path)
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"SQLite store {path}: cannot create folder {path.parent} (")
    assert message.endswith("expected a writable file path")
    assert raised.value.exit_code == 2


def test_another_applications_database_or_an_edge_store_is_refused_unchanged(tmp_path):
    """A SQLite file with tables of its own is not made a cloud store: creating ours in it, or
    switching it to WAL, would change another application's data."""
    other = tmp_path / "contacts.db"
    with contextlib.closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
        conn.execute("INSERT INTO contacts VALUES ('Ada')")
    before = other.read_bytes()
    with pytest.raises(StoreError) as raised:
        SQLiteCloudStore(other)
    assert str(raised.value) == (f"SQLite store {other}: holds other tables (contacts) and no der_readings; expected a "
                                 "cloud store made by this product, or a new file") and raised.value.exit_code == 2
    assert other.read_bytes() == before
    SQLiteEdgeStore(tmp_path / "edge.db").close()
    with pytest.raises(StoreError, match="holds other tables .*readings.* and no der_readings"):
        SQLiteCloudStore(tmp_path / "edge.db")
    SQLiteCloudStore(tmp_path / "cloud.db").close()
    with pytest.raises(StoreError, match="and no readings; expected an edge store made by this product"):
        SQLiteEdgeStore(tmp_path / "cloud.db")
    (tmp_path / "empty.db").write_bytes(b"")  # an empty file is a new store
    SQLiteCloudStore(tmp_path / "empty.db").close()


def test_unknown_table_names_the_tables(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as cloud, pytest.raises(KeyError, match="der_readings"):
        cloud.read_frame("readingz")


@pytest.mark.parametrize("env, backend, expected", [
    ({}, None, SQLITE),
    ({"DATABASE_URL": "postgresql://u@h/db"}, None, POSTGRES),
    ({"DATABASE_URL": "postgresql://u@h/db", "SUPABASE_URL": "https://x.supabase.co", "SUPABASE_KEY": "k"}, None,
     SUPABASE),
    ({"DATABASE_URL": "postgresql://u@h/db"}, SQLITE, SQLITE),
])
def test_factory_selects_once_from_settings(env, backend, expected):
    assert cloud_settings(env, backend=backend).backend == expected


@pytest.mark.parametrize("env, message", [
    ({"SUPABASE_URL": "https://x.supabase.co"}, "SUPABASE_KEY is not set"),
    ({"SUPABASE_URL": "x.supabase.co", "SUPABASE_KEY": "k"}, "SUPABASE_URL='x.supabase.co': expected https://"),
    ({"DATABASE_URL": "mysql://h/db"}, "DATABASE_URL: expected postgresql://"),
])
def test_factory_refuses_bad_settings_in_one_line(env, message):
    with pytest.raises(ConfigError, match=message):
        cloud_settings(env)


@pytest.mark.parametrize("value, choice", [
    (None, (None, None)),  # the environment decides
    ("postgres", (POSTGRES, None)),
    ("sqlite", (SQLITE, None)),
    ("trial/cloud.db", (SQLITE, "trial/cloud.db")),
])
def test_cloud_db_names_a_backend_or_an_embedded_file_for_every_command(value, choice):
    assert cloud_db_choice(value) == choice


def test_the_dashboard_opens_the_embedded_file_the_jobs_wrote(tmp_path, monkeypatch):
    """``--cloud-db FILE`` means the same file to the dashboard as to the jobs."""
    import run_dashboard

    opened = {}
    monkeypatch.setattr(run_dashboard, "create_app", lambda store, **_: opened.setdefault("store", store))
    monkeypatch.setattr("uvicorn.Server.run", lambda *args, **kwargs: None)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    SQLiteCloudStore(tmp_path / "trial.db").close()  # a job wrote it
    assert run_dashboard.main(["--cloud-db", str(tmp_path / "trial.db")]) == 0
    assert opened["store"].label.endswith("trial.db")


@pytest.mark.parametrize("flag", ["--cloud-db", "--sqlite-path"])
def test_the_dashboard_refuses_a_named_store_no_job_wrote(tmp_path, monkeypatch, capsys, flag):
    """A mistyped path made an empty store there and showed it empty, as if the jobs had
    written nothing."""
    import run_dashboard

    monkeypatch.setattr("uvicorn.Server.run", lambda *args, **kwargs: pytest.fail("served a store no job wrote"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    assert run_cli(run_dashboard.main, [flag, str(tmp_path / "tiral.db")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no cloud store at" in line and "tiral.db" in line
    assert not (tmp_path / "tiral.db").exists()


def test_a_text_holding_nul_kept_by_an_earlier_version_still_reads(tmp_path):
    """Only writes refuse NUL: a file that took one before reads as it is."""
    with SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
        cloud._conn.execute(f"INSERT INTO {s.PLANS} (device_id, ts, issued_at, objective) VALUES ('a', 0, 0, ?)", ("x\x00y",))
        assert cloud.read_frame(s.PLANS)[s.OBJECTIVE].tolist() == ["x\x00y"]
