#!/usr/bin/env python
"""Plan when each battery should buy, sell or store over the next day; backtest what that is worth."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from pathlib import Path

import pandas as pd

from cloud.evaluation.backtest import BacktestResult, BacktestSettings, run_backtest, whole_steps_replan
from cloud.evaluation.recorded import DEFAULT_STEP, recorded_steps, run_recorded_backtest, with_battery
from cloud.evaluation.report import by_month, metrics, write_report
from cloud.job_status import json_default as _json_default
from cloud.live.inputs import stored_site_inputs
from cloud.optimization import forecasters as fc
from cloud.optimization.decision import Execution
from cloud.optimization.planner import (
    PlanSettings,
    StoredSite,
    plan_status,
    run_plan,
    stored_sites,
)
from cloud.optimization.summary import plan_summary
from cloud.store.factory import add_cloud_db_flag, open_store_from_args
from der_core import der_data as dd
from der_core.cli_support import (
    START_YEARS,
    ArgumentParser,
    add_common_flags,
    arg_type,
    device_id_arg,
    duration,
    output_folder,
    positive_float,
    positive_int,
    print_table,
    progress,
    run_cli,
    setup_logging,
    start_timestamp,
)
from der_core.config import SimulatorConfig, load_config, with_overrides
from der_core.errors import DERError, UsageError

#: Days a simulated site's backtest runs unless --days says.
DEFAULT_DAYS = 30
#: The plan's and backtest's step unless --step-minutes (or a coarser meter) says.
DEFAULT_STEP_MINUTES = int(DEFAULT_STEP / pd.Timedelta(minutes=1))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_optimizer.py", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="plan the next horizon (the default)")
    mode.add_argument("--backtest", action="store_true", help="rolling-horizon backtest against the reference strategies")
    mode.add_argument("--status", action="store_true", help="last optimizer runs and the newest plan per device")
    parser.add_argument("--device-id", type=device_id_arg,
                        help="site to plan (default: the --config file's, else every site in the cloud store)")
    parser.add_argument("--config", help="simulator config JSON of the site (default: the built-in defaults)")
    parser.add_argument("--start", type=arg_type(start_timestamp, f"an ISO 8601 date or time in {START_YEARS[0]}-{START_YEARS[1]}"),
                        help="plan start (default now) or first backtest day (default --days before today)")
    parser.add_argument("--horizon-hours", type=arg_type(positive_float, "a positive number of hours"), default=24.0)
    parser.add_argument("--step-minutes", type=arg_type(positive_int, "a positive whole number of minutes"), default=None,
                        help="plan and backtest step (default 15; a declared site's backtest: its meter's interval "
                             "where that is longer)")
    parser.add_argument("--publish", action="store_true", help="send the plan to der/<device_id>/battery/setpoint (MQTT_HOST, MQTT_PORT)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--steps", action="store_true", help="also print every step of the plan under its summary")
    parser.add_argument("--days", type=arg_type(positive_int, "a positive whole number of days"),
                        help=f"backtest length (default {DEFAULT_DAYS}; a declared site's: every recorded whole day)")
    parser.add_argument("--battery-kwh", type=arg_type(positive_float, "a positive number of kWh"),
                        help="backtest a what-if battery of this capacity instead of the site's own (with --battery-kw)")
    parser.add_argument("--battery-kw", type=arg_type(positive_float, "a positive number of kW"),
                        help="the what-if battery's charge and discharge power limit")
    parser.add_argument("--forecaster", choices=fc.NAMES, default=fc.AUTO,
                        help="what the plans know (default auto: the trained models where they cover the site, else naive)")
    parser.add_argument("--execution", choices=[e.value for e in Execution], default=Execution.GUARDED.value,
                        help="how the battery carries out plans, in the backtest and in a published schedule "
                             "(default guarded: commands, its own rule, an import cap, and a reserve kept for EV sessions)")
    parser.add_argument("--output", help="backtest report folder (default data/backtest/<device_id>)")
    add_cloud_db_flag(parser)
    add_common_flags(parser)
    return parser


def sites_to_plan(args, store) -> list[StoredSite]:
    """The sites to plan: the --config file's, the stored site named by --device-id (else, in
    a store without sites, the built-in defaults under that id: a first try; never where the
    store holds readings of it, since a real meter is never planned as a simulated home, nor
    where it holds other sites, whose name was likely meant), or, with neither, every site
    the cloud store knows."""
    if args.config:
        config = load_config(args.config)
        config = with_overrides(config, device_id=args.device_id) if args.device_id else config
        return [StoredSite(config, config.reads_device)]  # a gateway's device: a real site
    known = stored_sites(store, args.device_id)
    if args.device_id:
        if args.device_id in known:
            site = known[args.device_id]
            if site.declared and args.forecaster == fc.PerfectForecaster.name:
                raise UsageError(f"--forecaster perfect: {args.device_id} is a real site, and perfect foresight replays "
                                 "a simulator, which it has not; expected --forecaster naive or models")
            return [site]
        if args.device_id in store.reading_stats():
            raise UsageError(f"{args.device_id}: the cloud store ({store.label}) holds its readings but no site; declare "
                             "it with run_cloud_sync.py --site FILE, or plan it as a simulated home with --config")
        if known:  # a store of sites: a name it lacks is mistyped far more often than a new simulated home
            near = difflib.get_close_matches(args.device_id, list(known), n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise UsageError(f"--device-id {args.device_id}: no site of that name in the cloud store ({store.label}); "
                             f"{hint}expected one of its {len(known)} sites ({dd.some(sorted(known), 5)}), or --config FILE "
                             "to plan a simulated home")
        return [StoredSite(with_overrides(SimulatorConfig(), device_id=args.device_id), False)]
    if not known:
        raise UsageError(f"no sites in the cloud store ({store.label}) to plan; make some with python run_pipeline.py "
                         "(or run_simulator.py and run_cloud_sync.py), declare one with run_cloud_sync.py --site FILE, "
                         "or name one with --device-id or --config")
    return list(known.values())


def plan(args) -> None:
    settings = PlanSettings(args.start, args.horizon_hours, args.step_minutes or DEFAULT_STEP_MINUTES, args.forecaster,
                            execution=args.execution)
    # A store file named by --cloud-db must be one the jobs wrote: a mistyped path made an
    # empty store, and --device-id there planned the built-in home, in its time zone.
    store = open_store_from_args(args, existing=True)
    site_plans, refused = [], []
    try:
        sites = sites_to_plan(args, store)
        for site in sites:  # one site that cannot be planned never holds back the others' plans
            try:
                site_plans.append(run_plan(site.config, settings, store, site.declared))
            except DERError as error:
                if len(sites) == 1:
                    raise
                refused.append(str(error))
    finally:
        store.close()
    topics = {}
    if args.publish:
        from cloud.optimization.publish import publish_schedule
        from edge_gateway.mqtt.settings import mqtt_settings

        for site_plan in site_plans:
            topics[site_plan.device_id] = publish_schedule(mqtt_settings(None), site_plan.device_id, site_plan.schedule())
    if args.json:
        bodies = [{**json.loads(p.to_json()), "summary": plan_summary(p).to_dict(), "published_to": topics.get(p.device_id)}
                  for p in site_plans]
        print(json.dumps(bodies[0] if args.device_id or args.config else bodies, indent=2))
    else:
        for site_plan in site_plans:
            print_plan(site_plan, settings, topics.get(site_plan.device_id), args.steps)
    if refused:
        raise DERError(f"{len(refused)} of {len(sites)} sites not planned: {'; '.join(refused)}")


def print_plan(site_plan, settings: PlanSettings, topic: str | None, steps: bool) -> None:
    """The site's summary; with --steps every step of the plan under it."""
    summary = plan_summary(site_plan)
    print("\n".join(summary.lines()))
    print(f"forecaster {site_plan.forecaster} ({site_plan.forecaster_reason})")
    if site_plan.battery_start_line():
        print(site_plan.battery_start_line())
    if steps:
        print(f"\nevery step (start time in {summary.zone}; battery kW positive charges; money in {summary.currency}):")
        print_table([{"time": row["time"], "action": row["action"], "battery kW": f"{row['power_kw']:.2f}",
                      "SOC %": f"{row['soc_percent']:.1f}", f"price {summary.currency}/kWh": f"{row['price_per_kwh']:.2f}",
                      f"cost {summary.currency}": f"{row['expected_cost']:.2f}"} for row in site_plan.table()])
    print("written to dispatch_plans" + (f"; published to {topic}" if topic else ""))
    detail = site_plan.summary()
    if detail.published == "rule":
        print(f"not sent: {detail.published_reason}")
    expected = detail.expected_over_scenarios
    if expected:
        print(f"planned over {expected.scenarios} load scenarios from recent days, the next "
              f"{settings.replan_minutes} minutes decided for all of them; the blocks and bills above are "
              f"the first's. Expected over all: bill {summary.money(expected.cost)}, saves "
              f"{summary.money(expected.savings_vs_no_battery)} against no battery, "
              f"{summary.money(expected.savings_vs_self_consumption)} against the battery's own rule")
    policy = detail.reserve
    if policy:
        print(f"reserve policy: import cap {policy.cap_kw:.1f} kW; with no car charging the battery covers load down to "
              f"{policy.floor_above_min_kwh_now:.1f} kWh above its minimum now, "
              f"{policy.floor_above_min_kwh_lowest:.1f} to {policy.floor_above_min_kwh_highest:.1f} kWh over the plan ({policy.states} session states, "
              "learnt from the last four weeks)" + ("; the car charges at most once a day" if policy.one_session_a_day else ""))
    print()


def backtest_config(args) -> SimulatorConfig:
    config = load_config(args.config) if args.config else SimulatorConfig()
    config = with_overrides(config, device_id=args.device_id) if args.device_id else config
    return config if args.battery_kwh is None and args.battery_kw is None else \
        with_battery(config, args.battery_kwh, args.battery_kw)


def declared_backtest(args, settings: BacktestSettings) -> BacktestResult | None:
    """The recorded-data backtest of the declared site --device-id names in the cloud store
    (recorded.py); None when the site is not a declared one (--config given, no --device-id,
    or a simulated site)."""
    if args.config or not args.device_id:
        return None
    store = open_store_from_args(args, existing=True)
    try:
        site = stored_sites(store, args.device_id).get(args.device_id)
        if site is None:
            sites_to_plan(args, store)  # a name a store of sites lacks is refused here as a plan refuses it
            return None
        if not site.declared:
            return None
        config = with_battery(site.config, args.battery_kwh, args.battery_kw)
        asked = None if args.step_minutes is None else settings.step
        recorded, step = recorded_steps(store, args.device_id, asked)
        minutes = int(step / pd.Timedelta(minutes=1))
        settings = dataclasses.replace(settings, step_minutes=minutes,
                                       replan_minutes=whole_steps_replan(minutes, settings.replan_minutes))
        return run_recorded_backtest(config, recorded, settings, args.days, progress, store,
                                     stored_site_inputs(store, args.device_id))
    finally:
        store.close()


def backtest(args) -> None:
    step_minutes = args.step_minutes or DEFAULT_STEP_MINUTES
    settings = BacktestSettings(days=args.days or DEFAULT_DAYS, start=args.start, step_minutes=step_minutes,
                                replan_minutes=whole_steps_replan(step_minutes),
                                horizon_hours=args.horizon_hours, forecaster=args.forecaster, execution=args.execution)
    if args.output:  # checked before the backtest, which takes minutes
        output_folder(args.output, "--output")
    result = declared_backtest(args, settings) or run_backtest(backtest_config(args), settings, progress)
    config = result.config
    path = write_report(result, Path(args.output or f"data/backtest/{config.device_id}"))
    table, months = metrics(result), by_month(result)
    if args.json:
        print(json.dumps({"report": str(path), "forecaster": result.settings.forecaster,
                          "forecaster_reason": result.forecaster_reason,
                          "strategies": table.reset_index().to_dict("records"),
                          "months": months.reset_index().to_dict("records"),
                          "filled_steps": result.filled_steps,
                          "filled_longest": None if result.filled_longest is None else {
                              "from": (result.filled_longest[0] - result.settings.step).isoformat(),
                              "steps": result.filled_longest[1]}}, indent=2, default=_json_default))
        return
    print(backtest_heading(args, result))
    print_table(table.reset_index().to_dict("records"),
                ["strategy", "bill", "stored", "savings", "capture", "peak_import_kw", "self_consumption", "cycles",
                 "emissions_kg"])
    if len(months) > 1:
        print("\nbills by billing month:")
        print_table(months.reset_index().to_dict("records"))
    if result.settings.execution != settings.execution:
        print(f"\nMPC ran {result.settings.execution}: the {settings.execution} reserve policy needs simulated car sessions")
    if result.filled_steps:
        print(filled_line(result))
    print(f"\nreport: {path}")


def filled_line(result: BacktestResult) -> str:
    """How many steps of a recorded backtest were interpolated, and the longest run of them,
    in local time with its billing month: a straight line drawn over days of missing PV
    weighs on that month's bills, where a step here or there does not."""
    line = f"{result.filled_steps} of {len(result.actuals)} steps had no reading and were interpolated"
    if result.filled_longest is None:
        return line
    first, steps = result.filled_longest
    start = (first - result.settings.step).tz_convert(result.config.timezone)
    return line + (f"; the longest run, {duration(result.settings.step * steps)} from {start:%a %Y-%m-%d %H:%M %Z}, "
                   f"is in {start:%Y-%m}'s bills")


def backtest_heading(args, result: BacktestResult) -> str:
    """What was backtested: the site, its days, the battery (a what-if one said so) and the forecaster."""
    config, settings = result.config, result.settings
    battery = config.battery
    what_if = " (what-if)" if args.battery_kwh is not None or args.battery_kw is not None else ""
    first = result.actuals.index[0] - settings.step
    held = (f"battery {battery.capacity_kwh:g} kWh / {battery.max_discharge_rate_kw:g} kW{what_if}"
            if battery.capacity_kwh > 0 else "no battery")
    return (f"{config.device_id}: {settings.days} days from {first.tz_convert(config.timezone):%Y-%m-%d %H:%M %Z}, "
            f"{held}, forecaster {settings.forecaster} ({result.forecaster_reason})")


def status(args) -> None:
    store = open_store_from_args(args, existing=True)
    try:
        report = plan_status(store, pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=7))
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, default=_json_default, indent=2))
        return
    run, error = report["last_run"], report["last_error"]
    print(f"cloud: {report['cloud']}")
    print(f"last run: #{run['id']} {run['started_at']} {run['status']}, {run['rows']} rows" if run else "last run: none")
    print(f"last error: {error['started_at']} {error['error']}" if error else "last error: none")
    print_table(report["plans"])
    if report["plans_of_unknown_sites"]:
        print(f"not listed: plans of devices the store has no site or readings for "
              f"({', '.join(report['plans_of_unknown_sites'])})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.status:
        status(args)
        return 0
    if args.backtest:
        backtest(args)
    else:
        only = [flag for flag, value in (("--days", args.days), ("--battery-kwh", args.battery_kwh),
                                         ("--battery-kw", args.battery_kw)) if value is not None]
        if only:  # a plan drives the battery the site has; planning another would be read as its
            raise UsageError(f"{', '.join(only)} only {'applies' if len(only) == 1 else 'apply'} to --backtest; a plan "
                             "is made for the site's own battery (change it in the site file)")
        plan(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
