#!/usr/bin/env python3
"""The whole chain on embedded defaults: simulate a few homes' recent history, sync it to the
cloud store, engineer features, train (or reuse) forecasters, plan each site's next 24 h and
print what to do when. --site FILE (repeatable) runs the chain for real sites instead: declare
them, fetch their weather and prices, features, forecasts and plans, simulating nothing.
--continuous keeps every job running on its production schedule."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cloud.dashboard.queries import pipeline_status
from cloud.pipeline import pipeline_settings, run_continuous, run_once
from cloud.pipeline import settings as ps
from cloud.pipeline.summary import print_summary
from cloud.store.factory import add_cloud_db_flag, cloud_db_choice, open_cloud_store
from cloud.store.sqlite import DEFAULT_CLOUD_DB
from der_core import der_data as dd
from der_core.cli_support import (
    ArgumentParser,
    add_common_flags,
    arg_type,
    output_folder,
    positive_int,
    print_table,
    run_cli,
    setup_logging,
)
from der_core.errors import UsageError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run the chain once and print a summary (default)")
    mode.add_argument("--continuous", action="store_true",
                      help="gateway every --interval, sync every minute, features hourly, training daily, plans hourly")
    mode.add_argument("--status", action="store_true", help="each stage's last run from pipeline_runs")
    count = arg_type(positive_int, "a positive whole number")
    parser.add_argument("--data-dir", default=ps.DEFAULT_DATA_DIR,
                        help=f"edge store, embedded cloud store, battery states and models (default {ps.DEFAULT_DATA_DIR}/)")
    parser.add_argument("--sites", type=count, help=f"simulated homes (default {ps.DEFAULT_SITES})")
    parser.add_argument("--days", type=count, default=ps.DEFAULT_DAYS, help=f"days of history on a first run (default {ps.DEFAULT_DAYS})")
    parser.add_argument("--interval", type=count, default=ps.DEFAULT_INTERVAL_S,
                        help=f"seconds between readings (default {ps.DEFAULT_INTERVAL_S})")
    parser.add_argument("--seed", type=arg_type(int, "a whole number"),
                        help="the simulated homes' seed (same seed, same homes)")
    parser.add_argument("--site", metavar="FILE", action="append", default=[],
                        help="a real site's file (repeatable): declare it, fetch its weather and prices and plan it "
                             "instead of simulated homes (readings from run_cloud_sync.py --import or a gateway)")
    parser.add_argument("--publish", action="store_true",
                        help="send each plan to its gateway on der/<device_id>/battery/setpoint (MQTT_HOST, MQTT_PORT)")
    add_cloud_db_flag(parser, embedded=f"{ps.DEFAULT_DATA_DIR}/cloud.db, or cloud.db in --data-dir")
    add_common_flags(parser)
    return parser


def show_status(settings: ps.PipelineSettings, named: bool) -> int:
    """Each stage's last run; a store file ``named`` by --cloud-db must exist (a typo would
    make it), the default one is made as every command makes it."""
    store = open_cloud_store(settings.cloud, existing=named)
    try:
        jobs = pipeline_status(store, dd.utc_now())
    finally:
        store.close()
    print_table([{k: job[k] for k in ("job", "last_status", "last_success", "rows", "failures", "last_error")}
                 for job in jobs])
    return 0 if all(job["last_status"] in ("ok", "running") for job in jobs) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, quiet=not args.verbose and not args.continuous)
    simulated = [flag for flag, value in (("--sites", args.sites), ("--seed", args.seed)) if value is not None]
    if args.site and simulated:  # real sites are planned instead of simulated homes: these would shape nothing
        raise UsageError(f"--site FILE plans declared sites instead of simulated homes, so {' and '.join(simulated)} "
                         "would change nothing; expected --site or the simulation's flags, not both")
    backend, embedded = cloud_db_choice(args.cloud_db)
    output_folder(args.data_dir, "--data-dir")
    settings = pipeline_settings(args.data_dir, sites=ps.DEFAULT_SITES if args.sites is None else args.sites,
                                 days=args.days, interval_s=args.interval,
                                 seed=ps.DEFAULT_SEED if args.seed is None else args.seed, backend=backend, site_files=args.site, cloud_db=embedded,
                                 publish=args.publish, fetching=not args.status)
    for site in settings.declared:  # said, not refused, as run_cloud_sync.py --site says them
        for doubt in site.doubts():
            print(f"warning: {site.read_from}: {doubt}", file=sys.stderr)
    if args.status:
        return show_status(settings, named=embedded is not None)
    default_store = settings.cloud.backend != "sqlite" or settings.cloud.sqlite_path == DEFAULT_CLOUD_DB
    store_flag = "" if default_store else f" --cloud-db {settings.cloud.sqlite_path}"
    hint = f"see it in the dashboard: python run_dashboard.py{store_flag}  (then open http://127.0.0.1:8000/)"
    if args.continuous:
        print(hint, file=sys.stderr)
        run_continuous(settings)
        return 0
    print_summary(run_once(settings), hint)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
