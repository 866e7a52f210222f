#!/usr/bin/env python3
"""Serve the dashboard and its JSON API on the configured cloud store (embedded by default)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from cloud.dashboard.app import (
    DEFAULT_PORTFOLIO_DIR,
    PORTFOLIO_ENV,
    TOKEN_ENV,
    create_app,
    dr_from_env,
)
from cloud.dashboard.serve import listening_socket
from cloud.dashboard.settings import portfolio_folder, store_choice
from cloud.store.factory import add_cloud_db_flag, cloud_settings, open_cloud_store
from der_core.cli_support import (
    ArgumentParser,
    add_common_flags,
    arg_type,
    run_cli,
    setup_logging,
)

log = logging.getLogger("der.dashboard")


def port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(text)
    return value


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=arg_type(port, "a port number 1-65535"), default=8000, help="default 8000")
    add_cloud_db_flag(parser)
    parser.add_argument("--sqlite-path", help="embedded cloud store file, as --cloud-db FILE (default data/cloud.db); "
                                              "not with --cloud-db FILE, postgres or supabase")
    parser.add_argument("--portfolio-dir", help=f"the folder run_portfolio.py wrote its results in (env {PORTFOLIO_ENV}, "
                                                f"default {DEFAULT_PORTFOLIO_DIR}, which may not exist yet)")
    add_common_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    token = os.environ.get(TOKEN_ENV) or None
    portfolio_dir = portfolio_folder(args.portfolio_dir, os.environ.get(PORTFOLIO_ENV))
    backend, named = store_choice(args.cloud_db, args.sqlite_path)
    # The dashboard shows what the jobs wrote: a file named here must be theirs (a typo would
    # make an empty store and show it); the default one is made as every command makes it.
    store = open_cloud_store(cloud_settings(backend=backend, sqlite_path=named), existing=named is not None)
    import uvicorn

    try:
        # A store that cannot be reached now is said now, in one line (exit 1), rather than
        # serving a page whose every call answers 503; once serving, an outage is a 503.
        store.runs(limit=1)
        app = create_app(store, token=token, portfolio_dir=portfolio_dir, dr=dr_from_env(store))
        level = "debug" if args.verbose else "warning" if args.quiet else "info"
        with listening_socket(args.host, args.port) as sock:
            if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):  # said once it does
                log.warning("--host %s exposes the API beyond this machine without %s", args.host, TOKEN_ENV)
            # host and port still go to uvicorn, which names them in its "running on" line
            uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=level)).run(sockets=[sock])
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
