"""The dashboard's command-line choices of store and portfolio folder, validated where they
enter: a flag that would be dropped unsaid, or a folder a typo named, is one line (exit 2)."""

from __future__ import annotations

from pathlib import Path

from cloud.dashboard.app import DEFAULT_PORTFOLIO_DIR, PORTFOLIO_ENV
from cloud.store.factory import SQLITE, cloud_db_choice
from der_core.der_data import shown
from der_core.errors import UsageError


def store_choice(cloud_db: str | None, sqlite_path: str | None) -> tuple[str | None, str | None]:
    """``--cloud-db`` and ``--sqlite-path`` as ``(backend, embedded file)``. ``--sqlite-path``
    names the embedded store's file as ``--cloud-db FILE`` does, so it chooses that store over
    one the environment names; beside ``--cloud-db sqlite`` it says which file. Beside a server
    or another ``--cloud-db FILE`` one of the two would be dropped unsaid, so that is refused."""
    backend, path = cloud_db_choice(cloud_db)
    if sqlite_path is None:
        return backend, path
    if cloud_db not in (None, SQLITE):
        other = cloud_db if path is None else shown(path, 200)
        raise UsageError(f"--sqlite-path {shown(sqlite_path, 200)} and --cloud-db {other} name two stores; expected "
                         "one of them (--sqlite-path goes with --cloud-db sqlite only)")
    return SQLITE, sqlite_path


def portfolio_folder(flag: str | None, env: str | None) -> str:
    """The portfolio folder to read. One named (``--portfolio-dir``, else the environment's)
    must be a folder: a typo would otherwise show "no portfolio results yet" as if none had
    been run. The default may not exist yet: it appears with the first ``run_portfolio.py``."""
    named = flag if flag is not None else env or None
    if named is None:
        return DEFAULT_PORTFOLIO_DIR
    if not named or not Path(named).is_dir():
        where = (f"--portfolio-dir {shown(named, 200)}" if flag is not None
                 else f"environment variable {PORTFOLIO_ENV}={shown(named, 200)}")
        problem = "is a file" if Path(named).is_file() else "no such folder"
        raise UsageError(f"{where}: {problem}; expected the folder run_portfolio.py --output wrote its results in")
    return named
