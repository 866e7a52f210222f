#!/usr/bin/env python
"""Sync edge readings to the cloud store (docs/operations.md, "Cloud store and sync")."""

from __future__ import annotations

import sys

import pandas as pd

from cloud.store.factory import add_cloud_db_flag
from cloud.sync import settings as cfg
from cloud.sync.declare import declare_sites
from cloud.sync.forget import forget_device
from cloud.sync.importer import (
    UNITS,
    ImportOptions,
    declared_zone,
    import_files,
    print_import,
)
from cloud.sync.job import sync_once
from cloud.sync.meter_files import check_meter_path
from cloud.sync.status import print_status, sync_status
from der_core import der_data as dd
from der_core.cli_support import (
    ArgumentParser,
    add_common_flags,
    arg_type,
    device_id_arg,
    positive_float,
    run_cli,
    setup_logging,
)
from der_core.config import DEFAULT_EDGE_STORE
from der_core.errors import UsageError
from der_core.scheduling import Every, run_schedule
from der_core.site_file import load_site_file, site_row
from edge_gateway.stores.influx_settings import add_influx_flags


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_cloud_sync.py", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="sync once and exit")
    mode.add_argument("--continuous", action="store_true", help="sync every --interval seconds")
    mode.add_argument("--status", action="store_true", help="per-device sync status")
    mode.add_argument("--import", dest="import_file", metavar="FILE", action="append",
                      help="load a CSV, Excel (.xlsx), Parquet, Green Button XML or NEM12 meter file; given more than once, "
                           "downloads of one site joined by time (a meter's import and export)")
    mode.add_argument("--forget", metavar="DEVICE_ID", type=device_id_arg,
                      help="say what the cloud store holds of a device (readings, features, forecasts, plans, "
                           "quarantine, its site); with --yes, remove it all")
    parser.add_argument("--yes", action="store_true", help="--forget: remove what it lists")
    parser.add_argument("--interval", type=arg_type(positive_float, "a positive number of seconds"),
                        help="--continuous: seconds between syncs (SYNC_INTERVAL_SECONDS, default 60)")
    parser.add_argument("--json", action="store_true", help="--status or --import report as JSON")
    parser.add_argument("--init-db", action="store_true", help="create the cloud tables (also done on first use)")
    parser.add_argument("--edge-store", default=DEFAULT_EDGE_STORE, help=f"SQLite edge store (default {DEFAULT_EDGE_STORE})")
    add_cloud_db_flag(parser)
    parser.add_argument("--site", metavar="FILE", help="declare or update a real site from its site file (alone or with --import)")
    parser.add_argument("--weather-history", metavar="START:END", type=arg_type(day_span, "START:END days, END not before START (2024-03-01:2024-06-01)"),
                        help="with --site: store Open-Meteo's day-ahead forecasts of these GMT days (both included) for backtests")
    parser.add_argument("--device-id", type=device_id_arg, help="--import: the device the file belongs to (default: --site's)")
    parser.add_argument("--column-map", action="append",
                        help="--import: FILE_COLUMN=field pairs, comma separated; columns mapped to one field are summed, "
                             "one mapped to -field is subtracted (Export=-net_grid_flow_kw); with several --import, "
                             "once for all of them or once for each, in their order")
    parser.add_argument("--timestamp-column", help="--import: the file's time column (default: detected)")
    parser.add_argument("--timestamp-format", metavar="FMT",
                        help="--import: strftime pattern of the times, e.g. '%%d.%%m.%%Y %%H:%%M' "
                             "(default: the file's units row, else ISO 8601, Unix seconds or numeric dates in the "
                             "order the file's days above 12 show)")
    parser.add_argument("--units", choices=tuple(UNITS),
                        help="--import: power (W, kW), energy per reading (Wh, kWh) or a meter's running total "
                             "(Wh-total, kWh-total) in the file's power columns (default: the file's units row, else kW)")
    parser.add_argument("--time-label", choices=("start", "end"),
                        help="--import: the file's times are the start or the end of each reading's interval "
                             "(default: start for a column named like period_start or start, else end)")
    parser.add_argument("--timezone", help="--import: zone of timestamps without an offset "
                        "(default: the site's declared zone, else UTC)")
    parser.add_argument("--longitude", type=arg_type(float, "degrees east"), metavar="DEG",
                        help="--import: site longitude for the clock check (default: the site's row)")
    add_influx_flags(parser, with_enable=False)
    add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not (args.once or args.continuous or args.status or args.import_file or args.init_db or args.site
            or args.weather_history or args.forget):
        raise UsageError("nothing to do: expected one of --once, --continuous, --status, --import FILE, --site FILE, "
                         "--init-db, --forget DEVICE_ID")
    if args.interval is not None and not args.continuous:
        raise UsageError("--interval is the period of --continuous; expected it with --continuous")
    if args.json and not (args.status or args.import_file):
        raise UsageError("--json prints --status or --import as JSON; expected it with one of them")
    if args.yes and not args.forget:
        raise UsageError("--yes confirms --forget DEVICE_ID; expected it with --forget")
    if args.forget and (args.site or args.init_db or args.weather_history):
        raise UsageError("--forget DEVICE_ID runs alone; expected no --site, --init-db or --weather-history with it")
    site = declared_site_of(args)
    for path in (args.import_file or []) if site is not None else []:  # a mistyped name writes no site either
        check_meter_path(path)
    notes = sys.stderr if args.json else sys.stdout  # --json: stdout is the one JSON document
    cloud = cfg.open_cloud(args)
    try:
        if args.forget:
            print(forget_device(cloud, args.forget, remove=args.yes).line())
            return 0
        if args.init_db:
            cloud.init_schema()
            print(f"cloud schema ready: {cloud.label}", file=notes)
        if site is not None:
            rewritten = declare_sites(cloud, [site]).get(site.device_id)
            print(f"site {site.device_id} declared in {cloud.label}", file=notes)
            if rewritten:
                print(f"  its zone, country, place or panels changed: its features are written again from its first "
                      f"reading on the next feature run ({', '.join(rewritten)})", file=notes)
            for doubt in site.doubts():
                print(f"  warning: {doubt}", file=notes)
        if args.weather_history:
            print(weather_history(cloud, site, args.weather_history))
        if args.import_file:
            options = ImportOptions.each_file(args, declared_zone(cloud, args.device_id))
            print_import(import_files(args.import_file, cloud, options), options[0], as_json=args.json)
        elif args.once or args.continuous or args.status:
            run_sync_modes(args, cloud)
    finally:
        cloud.close()
    return 0


def day_span(text: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``START:END`` as the GMT midnights of START and of the day after END (END included)."""
    first, _, last = text.partition(":")
    if not first.strip() or not last.strip():
        raise ValueError(text)
    start, end = pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC")
    if start != start.normalize() or end != end.normalize() or end < start:
        raise ValueError(text)
    return start, end + pd.Timedelta(days=1)


def weather_history(cloud, site, span: tuple[pd.Timestamp, pd.Timestamp]) -> str:
    """Store the site's archived day-ahead forecasts over ``span`` (what is missing only)."""
    from cloud.live.weather import (
        backfill_previous_runs,  # the weather adapters: only with --weather-history
    )
    from cloud.live.weather.open_meteo import PREVIOUS_RUNS_START

    # Days the archive cannot hold are refused, not asked for: a span of centuries would be
    # thousands of requests for nothing.
    today = dd.utc_now().normalize()
    if span[0] < PREVIOUS_RUNS_START or span[1] > today + pd.Timedelta(days=1):
        raise UsageError(f"--weather-history {span[0].date()}:{(span[1] - pd.Timedelta(days=1)).date()}: Open-Meteo's "
                         f"archive of past forecasts holds {PREVIOUS_RUNS_START.date()} to today ({today.date()}); "
                         "expected days within it")
    rows = backfill_previous_runs(cloud, site_row(site), *span)
    start, end = span[0].date(), (span[1] - pd.Timedelta(days=1)).date()
    return f"stored {rows} rows of Open-Meteo's day-ahead forecasts of {site.device_id} for {start} to {end} in {cloud.label}"


def declared_site_of(args):
    """The --site file's declaration, checked before anything is written; with --import it
    names the device the file belongs to."""
    if not args.site:
        if args.weather_history:
            raise UsageError("--weather-history needs --site FILE: the declared site whose forecasts to store")
        return None
    if args.once or args.continuous:
        raise UsageError("--site declares a site; run it alone or with --import FILE, not with --once or --continuous")
    from cloud.live.inputs import (
        check_declaration,  # its price source's adapter: only with --site
    )

    site = check_declaration(load_site_file(args.site))
    if args.device_id and args.device_id != site.device_id:
        raise UsageError(f"--device-id {args.device_id} differs from the site file's device_id {site.device_id}")
    args.device_id = site.device_id
    if args.weather_history and (site.weather is None or site.weather.source != "open-meteo"):
        raise UsageError(f"--weather-history stores Open-Meteo's forecasts, which site {site.device_id} reads only when "
                         'its site file declares "weather": "open-meteo"')
    return site


def run_sync_modes(args, cloud) -> None:
    settings = cfg.sync_settings(args)  # the variables checked before any store is opened
    edge = cfg.open_edge(args)
    try:
        if args.status:
            # With no edge store the stand-in's name is made afresh on each call: say there is none.
            absent = str(getattr(edge, "path", "")) == cfg.MEMORY
            source = settings.source or (f"none (no edge store at {args.edge_store})" if absent else edge.source)
            print_status(sync_status(edge, cloud, source), as_json=args.json)
        elif args.once:
            result = sync_once(edge, cloud, settings)
            print(f"synced {result.rows_synced} readings of {result.devices} devices "
                  f"({result.rows_quarantined} quarantined) to {cloud.label}")
        else:
            run_schedule([Every("cloud_sync", lambda: sync_once(edge, cloud, settings), cfg.interval_s(args))])
    finally:
        edge.close()


if __name__ == "__main__":
    sys.exit(run_cli(main))
