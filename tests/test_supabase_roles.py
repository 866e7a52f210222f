"""The migrations under Supabase's roles and default privileges, on the real server of
DATABASE_URL: a Supabase project grants every new table in ``public`` to ``anon`` and
``authenticated`` (``ALTER DEFAULT PRIVILEGES ... GRANT ALL ON TABLES``), so every table the
schema has, whoever created it, must end with row-level security on and nothing granted to
either role. The tables probed come from the catalog, so a table added later is probed too."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from cloud.store import migrations
from cloud.store.postgres import PostgresCloudStore
from tests.pg_fixtures import pg_url  # noqa: F401  (fixture)
from tests.sync_fixtures import readings

pytestmark = pytest.mark.postgres

CLIENT_ROLES = ("anon", "authenticated")
SUPABASE_ROLES = (*CLIENT_ROLES, "service_role")
PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
# ordinary and partitioned tables, views, materialised views, foreign tables
RELATION_KINDS = ["r", "p", "v", "m", "f"]
TABLE_KINDS = ("r", "p")


def _create_roles(conn: psycopg.Connection) -> None:
    """Supabase's roles; roles are shared by the whole server, so another run may have made
    them already, even at the same moment."""
    for role in SUPABASE_ROLES:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(sql.Identifier(role)))
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass


@pytest.fixture(scope="module")
def supabase_like(pg_url):  # noqa: F811
    """A fresh database with Supabase's default privileges set before the migrations run,
    then the schema (through the store, as a job applies it) and a few rows."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _create_roles(conn)
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind} TO anon, authenticated, service_role")
    with PostgresCloudStore(pg_url) as store:
        store.init_schema()
        store.upsert_readings(readings(devices=1, steps=3))
    return pg_url


def relations(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Every relation of the public schema, with its kind, from the catalog."""
    return conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind::text = ANY(%s) ORDER BY c.relname", (RELATION_KINDS,),
    ).fetchall()


def test_the_catalog_lists_the_bookkeeping_and_every_schema_table(supabase_like):
    """The probes below cover what they are meant to cover."""
    with psycopg.connect(supabase_like) as conn:
        names = {name for name, _ in relations(conn)}
    assert {"cloud_schema_migrations", "der_readings", "der_reading_stats"} <= names


def test_every_table_has_row_level_security_and_grants_nothing_to_clients(supabase_like):
    with psycopg.connect(supabase_like) as conn:
        found = relations(conn)
        without_rls = [name for name, kind in found if kind in TABLE_KINDS and not conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (name,)).fetchone()[0]]
        granted = [(role, name) for role in CLIENT_ROLES for name, _ in found if conn.execute(
            "SELECT has_table_privilege(%s, %s::regclass, %s)", (role, name, PRIVILEGES)).fetchone()[0]]
    assert without_rls == []
    assert granted == []


def _refused_or_empty(conn: psycopg.Connection, statement: sql.Composable) -> str | None:
    """None when the statement is refused or touches no row; otherwise what it did."""
    try:
        cursor = conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return None
    except (psycopg.errors.WrongObjectType, psycopg.errors.ObjectNotInPrerequisiteState):
        return None  # not possible on this relation at all (TRUNCATE or INSERT on a view)
    except psycopg.errors.IntegrityError as error:  # refused by a constraint, after the privilege checks
        return f"got past the privilege checks ({error.sqlstate})"
    if cursor.description is not None:
        rows = cursor.fetchall()
        return f"read {len(rows)} rows" if rows else None
    return f"changed {cursor.rowcount} rows" if cursor.rowcount else "succeeded"


def test_no_client_role_can_read_or_change_any_table(supabase_like):
    with psycopg.connect(supabase_like, autocommit=True) as conn:
        found = relations(conn)
        before = _row_counts(conn, found)
        assert before["cloud_schema_migrations"] > 0 and before["der_readings"] > 0  # something to protect
        allowed = [f"{role}: {what}" for role in CLIENT_ROLES for what in _probe(conn, role, found)]
        after = _row_counts(conn, found)
    assert allowed == []
    assert after == before


def _row_counts(conn: psycopg.Connection, found: list[tuple[str, str]]) -> dict[str, int]:
    return {name: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()[0]
            for name, _ in found}


def _probe(conn: psycopg.Connection, role: str, found: list[tuple[str, str]]) -> list[str]:
    """What ``role`` managed to do: read rows, change rows, or run a statement at all."""
    allowed = []
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        for name, kind in found:
            table = sql.Identifier(name)
            column = sql.Identifier(conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum LIMIT 1", (name,)).fetchone()[0])
            probes = {
                "SELECT": sql.SQL("SELECT * FROM {}").format(table),
                "INSERT": sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table),
                "UPDATE": sql.SQL("UPDATE {} SET {} = {}").format(table, column, column),
                "DELETE": sql.SQL("DELETE FROM {}").format(table),
            }
            if kind in TABLE_KINDS:
                probes["TRUNCATE"] = sql.SQL("TRUNCATE {}").format(table)
            for verb, statement in probes.items():
                outcome = _refused_or_empty(conn, statement)
                if outcome is not None:
                    allowed.append(f"{verb} {name}: {outcome}")
    finally:
        conn.execute("RESET ROLE")
    return allowed


def test_a_bookkeeping_table_left_open_is_closed_on_the_next_start(supabase_like):
    with psycopg.connect(supabase_like, autocommit=True) as conn:
        conn.execute("ALTER TABLE cloud_schema_migrations DISABLE ROW LEVEL SECURITY")
        conn.execute("GRANT ALL ON cloud_schema_migrations TO anon, authenticated")
        assert migrations.apply_postgres(conn) == []  # nothing new to apply; still closes it
        assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'cloud_schema_migrations'::regclass"
                            ).fetchone()[0]
        assert [role for role in CLIENT_ROLES if conn.execute(
            "SELECT has_table_privilege(%s, 'cloud_schema_migrations', %s)", (role, PRIVILEGES)).fetchone()[0]] == []
