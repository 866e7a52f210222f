#!/usr/bin/env python
"""Portfolio simulations: a fleet of prosumers under aggregator strategies (docs/portfolio.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from cloud.portfolio.distributed import (
    LOCAL_WORKERS,
    dask_client,
    dask_mapper,
    worker_count,
)
from cloud.portfolio.engine import RunSpec, default_partitions, run_portfolio
from cloud.portfolio.fleet import REGIONS, draw_fleet, read_csv
from cloud.portfolio.kpis import combine
from cloud.portfolio.report import write_outputs
from cloud.portfolio.scenario import SCENARIOS, named
from cloud.portfolio.strategies import STRATEGIES
from der_core.cli_support import (
    START_YEARS,
    ArgumentParser,
    add_common_flags,
    arg_type,
    bounded_int,
    local_instant,
    output_folder,
    positive_int,
    run_cli,
    setup_logging,
    start_timestamp,
)
from der_core.errors import UsageError

#: The largest run asked for on a command line: a million sites over ten years of hours, on
#: at most 64 local worker processes (each holds a few hundred MB; a cluster has --scheduler).
MOST_SITES, MOST_HOURS, MOST_WORKERS = 1_000_000, 87_840, 64


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_portfolio.py", description=__doc__)
    parser.add_argument("--sites", type=arg_type(bounded_int(1, MOST_SITES), f"a number of sites from 1 to {MOST_SITES:,}"),
                        default=200)
    parser.add_argument("--fleet-csv", help="read real sites from this CSV instead of drawing --sites")
    parser.add_argument("--region", choices=sorted(REGIONS), default="bay-area")
    parser.add_argument("--hours", type=arg_type(bounded_int(1, MOST_HOURS), f"a number of hours from 1 to {MOST_HOURS:,}"),
                        default=168)
    parser.add_argument("--start", default="2025-07-01T00:00:00-07:00",
                        help="ISO 8601 start; without an offset, the clock of --region's zone, in which every site's "
                             "day runs (default 2025-07-01 local)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help=f"comma list of {', '.join(STRATEGIES)} (one named twice runs once)")
    parser.add_argument("--scenario", default="default", help=f"one of {', '.join(SCENARIOS)}")
    parser.add_argument("--seed", type=arg_type(bounded_int(0, 2**63 - 1), "a whole number from 0"), default=0)
    parser.add_argument("--group-size", type=arg_type(positive_int, "a positive number of sites"), default=100,
                        help="sites the central aggregator plans jointly (default 100)")
    parser.add_argument("--partitions", type=arg_type(positive_int, "a positive number"), help="Dask partitions")
    parser.add_argument("--scheduler", help="existing Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    parser.add_argument("--workers", type=arg_type(bounded_int(1, MOST_WORKERS), f"a number of workers from 1 to {MOST_WORKERS}"),
                        default=LOCAL_WORKERS)
    parser.add_argument("--output", default="portfolio-output", help="folder for CSV, JSON, Markdown and PNG")
    parser.add_argument("--status", action="store_true", help="summarise the last run in --output")
    add_common_flags(parser)
    return parser


def _start(text: str, region: str) -> pd.Timestamp:
    """The run's first instant (UTC): a start without an offset is read on the clock of the
    region's zone, as run_optimizer.py and run_simulator.py read theirs on the site's; every
    site of a fleet runs its days there (fleet.simulator_config), a CSV's sites included."""
    try:
        start = start_timestamp(text)
    except ValueError:
        raise UsageError(f"--start {text!r}: expected an ISO 8601 date-time in {START_YEARS[0]}-{START_YEARS[1]} such as "
                         "2025-07-01T00:00:00-07:00") from None
    return local_instant(start, REGIONS[region]["timezone"], "--start", text)


def status(folder: Path) -> int:
    path = folder / "summary.json"
    if not path.exists():
        raise UsageError(f"{path}: no portfolio run found; run without --status first")
    data = json.loads(path.read_text())
    print(f"{data['sites']} sites, {data['steps']} steps from {data['start']}")
    for name, kpi in data["strategies"].items():
        print(f"  {name:<22} cost {kpi['total_cost']:>12,.2f}  peak {kpi['peak_aggregate_import_kw']:>10,.1f} kW")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    output = output_folder(args.output, "--output")  # checked before the run, not when its results are written
    if args.status:
        return status(output)
    times = pd.date_range(_start(args.start, args.region), periods=args.hours, freq="h")
    # A strategy named twice runs once: results are keyed by name, so a second run is only time.
    strategies = tuple(dict.fromkeys(s.strip() for s in args.strategies.split(",") if s.strip()))
    scenario = named(args.scenario)
    if args.fleet_csv:
        fleet = read_csv(args.fleet_csv, args.region, args.group_size)
        _stage(f"fleet: {len(fleet)} sites from {args.fleet_csv} ({fleet.region})")
    else:
        fleet = draw_fleet(args.sites, args.seed, args.region, args.group_size)
        _stage(f"fleet: {len(fleet)} sites drawn from seed {args.seed} ({fleet.region})")
    spec = RunSpec(fleet, times, strategies, scenario, args.seed)
    with dask_client(args.scheduler, args.workers) as client:
        workers = worker_count(client)
        partitions = args.partitions or default_partitions(spec, workers)
        _stage(f"dask: {workers} workers {'at ' + args.scheduler if args.scheduler else 'started'}")
        parts, limits = run_portfolio(spec, partitions, dask_mapper(client))
    _stage(f"simulated {len(fleet)} sites x {args.hours} h, strategies {', '.join(strategies)}, on {partitions} partitions")
    paths = write_outputs(combine(parts, times, 1.0, limits), args.output, fleet.region)
    _stage(f"report in {paths['report']}")
    return 0


def _stage(line: str) -> None:
    """One line as a stage ends, flushed: a run's output is often a log file, which Python
    writes in blocks, and a long run would show nothing until it exits."""
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
