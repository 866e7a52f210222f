"""A PostgreSQL database of its own for one benchmark run, dropped however the run ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict


def admin_url() -> str:
    return os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def url_for(admin: str, dbname: str) -> str:
    info = conninfo_to_dict(admin)
    auth = info.get("user", "postgres") + (f":{info['password']}" if info.get("password") else "")
    return f"postgresql://{auth}@{info.get('host', '127.0.0.1')}:{info.get('port', '5432')}/{dbname}"


@contextmanager
def throwaway_database(admin: str | None = None, prefix: str = "der_bench") -> Iterator[str]:
    """The URL of a new empty database on ``admin``'s server (DATABASE_URL's by default);
    dropped on the way out, with any session still open on it."""
    admin = admin or admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_for(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
