"""Schema: the SQL files of ``supabase/migrations`` for Postgres, and the equivalent SQLite DDL
derived from :data:`cloud.store.schema.TABLES`.

Postgres migrations are applied in file-name order (the Supabase CLI's timestamp convention),
each once, recorded in ``cloud_schema_migrations``, under an advisory lock so two jobs
starting together do not race. That bookkeeping table lives in ``public`` beside the data, where
Supabase's default privileges grant every new table to its client roles, so it gets the
schema tables' rule: row-level security on and nothing granted to ``anon`` or
``authenticated`` (a client key could otherwise read it, or empty it and make the next start
re-run every migration). A Supabase project gets the same files from ``supabase db
push``; the Supabase adapter never runs DDL (its key cannot).
"""

from __future__ import annotations

from pathlib import Path

from cloud.store import schema as s
from der_core import der_data as dd

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
_TRACKING = "cloud_schema_migrations"
_LOCK_KEY = 7_342_001  # arbitrary, constant: the advisory lock guarding migrations
CLIENT_ROLES = ("anon", "authenticated")  # Supabase's roles for client keys

# Idempotent, and only alters what needs it, so it runs on every start and also closes a
# tracking table an earlier version created open. The first migration creates the roles;
# a server without them has nothing to revoke.
_LOCK_TRACKING = f"""
DO $$
DECLARE
    r text;
BEGIN
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = '{_TRACKING}'::regclass) THEN
        ALTER TABLE {_TRACKING} ENABLE ROW LEVEL SECURITY;
    END IF;
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ({", ".join(f"'{role}'" for role in CLIENT_ROLES)})
             AND has_table_privilege(oid, '{_TRACKING}'::regclass,
                                     'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
    LOOP
        EXECUTE format('REVOKE ALL ON {_TRACKING} FROM %I', r);
    END LOOP;
END
$$;
"""

#: SQLite only: the feature-name lists the compact ``der_features`` encoding refers to
#: (cloud.store.sqlite). Postgres keeps ``features`` as jsonb and needs no such table.
FEATURE_LAYOUTS = "der_feature_layouts"

_SQLITE_TYPES = {s.TEXT: "TEXT", s.FLOAT: "REAL", s.INT: "INTEGER", s.BOOL: "INTEGER", s.TS: "INTEGER", s.JSON: "TEXT"}


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def apply_postgres(conn, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; return the names applied. ``conn`` is a
    psycopg connection in autocommit mode."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_TRACKING} (version text PRIMARY KEY, applied_at timestamptz DEFAULT now())"
        )
        done = {row[0] for row in conn.execute(f"SELECT version FROM {_TRACKING}")}
        for path in migration_files(directory):
            if path.stem in done:
                continue
            conn.execute(path.read_text())
            conn.execute(f"INSERT INTO {_TRACKING} (version) VALUES (%s)", (path.stem,))
            applied.append(path.stem)
        conn.execute(_LOCK_TRACKING)
    return applied


def sqlite_statements() -> list[str]:
    """``CREATE TABLE/INDEX/VIEW IF NOT EXISTS`` for every cloud table (timestamps as integer
    microseconds since the epoch, UTC, like the edge store)."""
    statements = []
    for table in s.TABLES.values():
        columns = []
        for name, kind in table.columns.items():
            if name == table.serial:
                columns.append(f"{name} INTEGER PRIMARY KEY AUTOINCREMENT")
            else:
                not_null = " NOT NULL" if name in table.keys else ""
                columns.append(f"{name} {_SQLITE_TYPES[kind]}{not_null}")
        if table.serial is None:
            columns.append(f"PRIMARY KEY ({', '.join(table.keys)})")
        statements.append(f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(columns)})")
        for index in table.indexes:
            name = f"{table.name}_{'_'.join(index)}_idx"
            if _leads_primary_key(table, index):
                # SQLite's primary-key index already serves these lookups; a copy of it cost a
                # third of every feature write, so files that have one lose it.
                statements.append(f"DROP INDEX IF EXISTS {name}")
            else:
                statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(index)})")
    statements.append(
        f"CREATE TABLE IF NOT EXISTS {FEATURE_LAYOUTS} (layout_id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE)"
    )
    statements.append(
        f"CREATE VIEW IF NOT EXISTS {s.READING_STATS} AS SELECT {dd.DEVICE_ID}, MIN({dd.TS}) AS {s.FIRST_TS}, "
        f"MAX({dd.TS}) AS {s.LAST_TS}, COUNT(*) AS {s.ROW_COUNT} FROM {s.READINGS} GROUP BY {dd.DEVICE_ID}"
    )
    return statements


def _leads_primary_key(table: s.Table, index: tuple[str, ...]) -> bool:
    """True when ``index`` is the leading columns of the table's (non-serial) primary key."""
    return table.serial is None and tuple(table.keys[:len(index)]) == tuple(index)
