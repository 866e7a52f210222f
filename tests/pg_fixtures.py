"""Postgres for tests: a throw-away database per test module on the server of DATABASE_URL.

The server is real (DESIGN.md rule 8). When it cannot be reached the tests skip with the
reason, except in CI (:func:`tests.conftest.in_ci`), where a missing server is a failure, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from benchmarks._database import throwaway_database

from tests.conftest import in_ci

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_URL


def _unreachable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"PostgreSQL required in CI: {reason}")
    pytest.skip(f"PostgreSQL not reachable ({reason}); set DATABASE_URL to run these tests")


def as_url(**info: str) -> str:
    """A ``postgresql://`` URL (the form DATABASE_URL takes) from libpq parameters."""
    auth = info.get("user", "postgres") + (f":{info['password']}" if info.get("password") else "")
    return f"postgresql://{auth}@{info.get('host', '127.0.0.1')}:{info.get('port', '5432')}/{info.get('dbname', '')}"


def with_dbname(url: str, dbname: str) -> str:
    return as_url(**{**conninfo_to_dict(url), "dbname": dbname})


def with_address(url: str, host: str, port: int) -> str:
    return as_url(**{**conninfo_to_dict(url), "host": host, "port": str(port)})


def wrong_port_url(url: str, port: int = 1) -> str:
    return with_address(url, conninfo_to_dict(url).get("host", "127.0.0.1"), port)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh empty database; dropped (with any open sessions) after the module."""
    admin = server_url()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        _unreachable(str(error).strip().splitlines()[0])
    conn.close()
    with throwaway_database(admin, prefix="der_test") as url:
        yield url


def truncate_all(url: str) -> None:
    """Empty every cloud table between tests (the schema stays)."""
    from cloud.store.schema import TABLES

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
