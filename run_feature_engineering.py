#!/usr/bin/env python
"""Turn raw DER readings in the cloud store into ML-ready features (docs/forecasting.md, "Feature engineering")."""

from __future__ import annotations

import sys

from cloud.feature_engineering.job import JOB, run_features
from cloud.feature_engineering.settings import DEFAULT_INTERVAL_S, settings_from
from cloud.feature_engineering.status import feature_status, print_status
from cloud.store.factory import add_cloud_db_flag, open_store_from_args
from der_core.cli_support import (
    ArgumentParser,
    add_common_flags,
    arg_type,
    positive_float,
    positive_int,
    run_cli,
    setup_logging,
)
from der_core.errors import UsageError
from der_core.scheduling import Every, run_schedule


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_feature_engineering.py", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="process what is new once and exit")
    mode.add_argument("--continuous", action="store_true", help="run every --interval seconds")
    mode.add_argument("--status", action="store_true", help="per-site feature status")
    parser.add_argument("--lookback-days", type=arg_type(positive_int, "a positive whole number of days"),
                        help="history to (re)build on a first run (FE_LOOKBACK_DAYS, default 30)")
    parser.add_argument("--interval", type=arg_type(positive_float, "a positive number of seconds"),
                        help=f"--continuous: seconds between runs (default {DEFAULT_INTERVAL_S})")
    parser.add_argument("--json", action="store_true", help="--status as JSON")
    add_cloud_db_flag(parser)
    add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not (args.once or args.continuous or args.status):
        raise UsageError("nothing to do: expected one of --once, --continuous, --status")
    if args.interval is not None and not args.continuous:
        raise UsageError("--interval is the period of --continuous; expected it with --continuous, not with --once or --status")
    if args.json and not args.status:
        raise UsageError("--json prints --status as JSON; expected it with --status")
    settings = settings_from(args)
    store = open_store_from_args(args, existing=args.status)
    try:
        if args.status:
            print_status(feature_status(store, settings), as_json=args.json)
        elif args.once:
            result = run_features(store, settings)
            skipped = sum(1 for site in result.sites if site.skipped)
            print(f"wrote {result.rows} feature rows ({result.version}) for {len(result.sites) - skipped} sites "
                  f"from {result.readings} readings to {store.label}" + (f"; {skipped} skipped" if skipped else ""))
        else:
            run_schedule([Every(JOB, lambda: run_features(store, settings), args.interval or float(DEFAULT_INTERVAL_S))])
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
