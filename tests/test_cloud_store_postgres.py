"""The Postgres cloud store against the real server of DATABASE_URL (a throw-away database
per module): the CloudStore contract, the migration SQL, row-level security, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest

from cloud.store import migrations, pg_copy
from cloud.store import schema as s
from cloud.store.postgres import PostgresCloudStore
from der_core import der_data as dd
from der_core.errors import StoreError, StoreUnavailable
from tests.cloud_store_contract import CloudStoreContract
from tests.pg_fixtures import pg_url, truncate_all, wrong_port_url  # noqa: F401  (fixture)
from tests.sync_fixtures import readings

pytestmark = pytest.mark.postgres

_KINDS = {"text": s.TEXT, "double precision": s.FLOAT, "bigint": s.INT, "integer": s.INT, "boolean": s.BOOL,
          "timestamp with time zone": s.TS, "jsonb": s.JSON}


@pytest.fixture
def store(pg_url):  # noqa: F811
    with PostgresCloudStore(pg_url) as cloud:
        cloud.init_schema()
        truncate_all(pg_url)
        yield cloud


class TestPostgresContract(CloudStoreContract):
    pass


def test_migration_sql_matches_the_table_definitions(store, pg_url):  # noqa: F811
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
        keys = conn.execute(
            "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu USING (constraint_name, table_schema, table_name) "
            "WHERE tc.constraint_type = 'PRIMARY KEY' ORDER BY tc.table_name, kcu.ordinal_position"
        ).fetchall()
    for table in s.TABLES.values():
        columns = {c: _KINDS[t] for name, c, t in rows if name == table.name}
        assert columns == table.columns, table.name
        assert tuple(c for name, c in keys if name == table.name) == table.keys, table.name


def test_migrations_apply_once_and_are_recorded(store, pg_url):  # noqa: F811
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrations.apply_postgres(conn) == []
        versions = [r[0] for r in conn.execute("SELECT version FROM cloud_schema_migrations")]
        # The SQL itself is safe to repeat, as a bare `psql -f` or a re-created tracking table would.
        for path in migrations.migration_files():
            conn.execute(path.read_text())
    assert versions == [p.stem for p in migrations.migration_files()]


def test_row_level_security_service_role_writes_anon_reads_nothing(store, pg_url):  # noqa: F811
    store.upsert_readings(readings(devices=1, steps=3))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        unprotected = conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND NOT relrowsecurity", (list(s.TABLES),)
        ).fetchall()
        assert unprotected == []
        conn.execute("SET ROLE service_role")
        assert conn.execute("SELECT count(*) FROM der_readings").fetchone()[0] == 3
        conn.execute("INSERT INTO pipeline_runs (job, status) VALUES ('x', 'ok')")
        conn.execute("RESET ROLE")
        for role in ("anon", "authenticated"):
            conn.execute(f"SET ROLE {role}")
            for table in (*s.TABLES, s.READING_STATS):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"SELECT * FROM {table}")
            conn.execute("RESET ROLE")


def test_unreachable_server_is_store_unavailable_without_password(pg_url):  # noqa: F811
    url = wrong_port_url(pg_url).replace("postgres@", "postgres:secret@")
    cloud = PostgresCloudStore(url, connect_timeout_s=2)  # no connection yet: jobs start while it is down
    with pytest.raises(StoreUnavailable, match="cannot connect") as error:
        cloud.count_readings()
    assert "secret" not in str(error.value) and "\n" not in str(error.value)


def test_store_reconnects_after_losing_its_connection(store, pg_url):  # noqa: F811
    store.upsert_readings(readings(devices=1, steps=3))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(StoreUnavailable):
        store.count_readings()
    assert store.count_readings() == 3


def test_a_database_recreated_under_a_running_job_gets_its_tables_again(pg_url):  # noqa: F811
    """A job running for months outlives its database (a restore, a dropped and recreated
    one): once a run finds the connection gone, the next connection applies the schema
    again, rather than every later run failing on a missing table until a restart."""
    from benchmarks._database import throwaway_database

    with throwaway_database(pg_url, prefix="der_recreated") as url:
        store = PostgresCloudStore(url)
        store.upsert_readings(readings(devices=1, steps=3))
        name = url.rsplit("/", 1)[-1]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        with pytest.raises(StoreUnavailable):
            store.count_readings()
        assert store.count_readings() == 0
        store.upsert_readings(readings(devices=1, steps=2))
        assert store.count_readings() == 2
        store.close()


def test_sql_error_is_store_error_not_unavailable(store):
    with pytest.raises(StoreError) as error:
        store.read_frame(s.FORECASTS, {"no_such_column": 1})
    assert not isinstance(error.value, StoreUnavailable)


def _copy_into_temp(conn, name: str, names: list[str], kinds: list[str], write) -> None:
    types = {s.TEXT: "text", s.FLOAT: "float8", s.INT: "int8", s.TS: "timestamptz"}
    conn.execute(f"CREATE TEMP TABLE {name} ({', '.join(f'{n} {types[k]}' for n, k in zip(names, kinds))})")
    with conn.cursor() as cur, cur.copy(f"COPY {name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
        write(copy, types)


@pytest.mark.parametrize("rows", [1, 97])
def test_numpy_binary_copy_stores_what_write_row_stores(pg_url, rows):  # noqa: F811
    frame = readings(devices=1, steps=rows, seed=rows)
    edits = {dd.SOLAR_KW: np.nan, dd.BATTERY_POWER: np.inf, dd.BATTERY_CYCLES: pd.NA, dd.TOU_PERIOD: np.nan}
    for position, (column, value) in enumerate(edits.items()):
        frame.loc[position % rows, column] = value
    frame.loc[(rows - 1), dd.DEVICE_ID] = "wärmepumpe-ü"
    if rows > 5:
        frame.loc[5, dd.TOU_PERIOD] = ""
    data = s.coerce(s.READINGS, frame)
    spec = s.table(s.READINGS)
    names = list(spec.writable)
    kinds = [spec.columns[c] for c in names]
    payload = pg_copy.encode(data, names, kinds)
    assert payload is not None

    def rows_by_row(copy, types):
        copy.set_types([types[k] for k in kinds])
        for row in zip(*s.python_columns(s.READINGS, data).values()):
            copy.write_row(row)

    with psycopg.connect(pg_url) as conn:
        _copy_into_temp(conn, "by_numpy", names, kinds, lambda copy, _: copy.write(payload))
        _copy_into_temp(conn, "by_row", names, kinds, rows_by_row)
        only = [conn.execute(f"SELECT count(*) FROM (TABLE {a} EXCEPT ALL TABLE {b}) x").fetchone()[0]
                for a, b in (("by_numpy", "by_row"), ("by_row", "by_numpy"))]
        count = conn.execute("SELECT count(*) FROM by_numpy").fetchone()[0]
    assert only == [0, 0] and count == rows


def test_numpy_binary_copy_leaves_unsupported_kinds_and_many_layouts_to_write_row():
    assert pg_copy.encode(pd.DataFrame({"j": [{"a": 1}]}), ["j"], [s.JSON]) is None
    many = pd.DataFrame({"t": [f"text-{i}" for i in range(pg_copy.MAX_LAYOUTS + 1)]})
    assert pg_copy.encode(many, ["t"], [s.TEXT]) is None


def _stored(store: PostgresCloudStore) -> pd.DataFrame:
    return store.read_readings().sort_values([dd.DEVICE_ID, dd.TS]).reset_index(drop=True)


def test_batch_of_old_and_new_readings_appends_the_new_and_upserts_the_old(store):
    frame = readings(2, 40, seed=5)
    first = frame[frame[dd.TS] < frame[dd.TS].min() + pd.Timedelta(hours=2)]
    store.upsert_readings(first)
    # The next batch re-sends the last hour (changed values, as a late correction would) and goes on.
    overlap_from = first[dd.TS].max() - pd.Timedelta(hours=1)
    batch = frame[frame[dd.TS] > overlap_from].copy()
    batch[dd.PRICE] = batch[dd.PRICE] + 1.0
    assert store.upsert_readings(batch) == len(batch)
    expected = pd.concat([first[first[dd.TS] <= overlap_from], batch])
    stored = _stored(store)
    assert len(stored) == len(frame) and not stored.duplicated([dd.DEVICE_ID, dd.TS]).any()
    np.testing.assert_allclose(stored[dd.PRICE], expected.sort_values([dd.DEVICE_ID, dd.TS])[dd.PRICE])


def test_append_that_races_another_writer_falls_back_to_the_upsert(store, monkeypatch):
    frame = readings(2, 24, seed=6)
    store.upsert_readings(frame)
    # As if the newest-row lookup ran before another writer stored these very keys.
    monkeypatch.setattr(PostgresCloudStore, "_newest_stored", staticmethod(lambda conn, devices: {}))
    changed = frame.copy()
    changed[dd.PRICE] = changed[dd.PRICE] * 2
    assert store.upsert_readings(changed) == len(changed)
    stored = _stored(store)
    assert len(stored) == len(frame)
    np.testing.assert_allclose(stored[dd.PRICE], changed.sort_values([dd.DEVICE_ID, dd.TS])[dd.PRICE])


def test_a_database_of_an_earlier_schema_gets_the_dr_windows_table_on_opening(pg_url, tmp_path):  # noqa: F811
    """A database migrated before ``dr_windows`` existed gets it from the next store that opens it."""
    from benchmarks._database import throwaway_database

    earlier = [p for p in migrations.migration_files() if p.stem < "20261211000000"]
    assert len(earlier) < len(migrations.migration_files())
    for path in earlier:
        (tmp_path / path.name).write_text(path.read_text())
    with throwaway_database(pg_url, prefix="der_earlier") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrations.apply_postgres(conn, tmp_path)
            assert conn.execute("SELECT to_regclass('dr_windows')").fetchone()[0] is None
        with PostgresCloudStore(url) as store:
            assert store.count_rows(s.DR_WINDOWS) == 0
