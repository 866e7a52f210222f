"""Cloud-store selection: the one place that turns settings into a :class:`CloudStore`.

Supabase when ``SUPABASE_URL`` and ``SUPABASE_KEY`` are both set, else Postgres when
``DATABASE_URL`` is, else the embedded SQLite file (DESIGN.md, "Stores"). An explicit
``backend`` (for example from ``--cloud-db``) wins over the environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cloud.store.base import CloudStore
from cloud.store.sqlite import DEFAULT_CLOUD_DB
from der_core.der_data import shown
from der_core.errors import ConfigError, UsageError
from der_core.redact import redact

SQLITE, POSTGRES, SUPABASE = "sqlite", "postgres", "supabase"


@dataclass(frozen=True)
class CloudSettings:
    backend: str = SQLITE
    sqlite_path: str = DEFAULT_CLOUD_DB
    database_url: str = ""
    supabase_url: str = ""
    supabase_key: str = ""


def cloud_settings(
    env: Mapping[str, str] | None = None, *, backend: str | None = None, sqlite_path: str | None = None
) -> CloudSettings:
    """Validate the cloud settings once, where they enter."""
    env = os.environ if env is None else env
    url, key = env.get("SUPABASE_URL", ""), env.get("SUPABASE_KEY", "")
    database_url = env.get("DATABASE_URL", "")
    if bool(url) != bool(key):
        missing = "SUPABASE_KEY" if url else "SUPABASE_URL"
        raise ConfigError(f"{missing} is not set: Supabase needs both SUPABASE_URL and SUPABASE_KEY")
    if backend is None:
        backend = SUPABASE if url else POSTGRES if database_url else SQLITE
    if backend == SUPABASE and not url.startswith(("http://", "https://")):
        raise ConfigError(f"SUPABASE_URL={redact(shown(url, 80))}: expected https://<project>.supabase.co")
    if backend == POSTGRES and not database_url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("DATABASE_URL: expected postgresql://user@host:port/dbname")
    if backend not in (SQLITE, POSTGRES, SUPABASE):
        raise ConfigError(f"cloud backend {backend!r}: expected one of sqlite, postgres, supabase")
    return CloudSettings(backend, sqlite_path or DEFAULT_CLOUD_DB, database_url, url, key)


def open_cloud_store(settings: CloudSettings, existing: bool = False) -> CloudStore:
    """The configured store; Postgres and SQLite apply the schema on first use. ``existing``
    (a command that only reads, such as ``--status``): an embedded file that is not there is
    refused, not made, since a mistyped path would otherwise create it and show it empty."""
    if existing and settings.backend == SQLITE and not Path(settings.sqlite_path).exists():
        raise UsageError(f"no cloud store at {shown(str(settings.sqlite_path), 200)}: no job has written one there; "
                         "expected the store the jobs write (--cloud-db FILE)")
    if settings.backend == SUPABASE:
        from cloud.store.supabase import SupabaseCloudStore

        return SupabaseCloudStore(settings.supabase_url, settings.supabase_key)
    if settings.backend == POSTGRES:
        from cloud.store.postgres import PostgresCloudStore

        return PostgresCloudStore(settings.database_url)
    from cloud.store.sqlite import SQLiteCloudStore

    return SQLiteCloudStore(settings.sqlite_path)


BACKENDS = (SQLITE, POSTGRES, SUPABASE)


def add_cloud_db_flag(parser: argparse.ArgumentParser, embedded: str = "data/cloud.db") -> None:
    """``--cloud-db FILE|BACKEND``: the store a command uses, one flag for every command;
    ``embedded`` says where the embedded store is by default."""
    parser.add_argument("--cloud-db", metavar="FILE|BACKEND",
                        help="the cloud store: an embedded store file, or sqlite, postgres or supabase by name "
                             "(default: Supabase if SUPABASE_URL is set, else Postgres if DATABASE_URL is, "
                             f"else {embedded})")


def cloud_db_choice(value: str | None) -> tuple[str | None, str | None]:
    """``--cloud-db``'s value as ``(backend, embedded file)``: a backend by name, else the file
    of an embedded store; ``(None, None)`` leaves the choice to the environment."""
    if value is None:
        return None, None
    return (value, None) if value in BACKENDS else (SQLITE, value)


def open_store_from_args(args: argparse.Namespace, existing: bool = False) -> CloudStore:
    """The store a command line asks for (:func:`cloud_db_choice`), else the one the
    environment gives (Supabase, Postgres, or the default embedded file); ``existing`` as
    :func:`open_cloud_store` takes it, for a file named by ``--cloud-db`` only: the default
    one is made on first use by every command, ``--status`` of a new install as well."""
    backend, path = cloud_db_choice(args.cloud_db)
    return open_cloud_store(cloud_settings(backend=backend, sqlite_path=path), existing and path is not None)
