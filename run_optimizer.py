#!/usr/bin/env python
"""Plan when each battery should buy, sell or store over the next day; backtest what that is worth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from cloud.job_status import json_default as _json_default
from cloud.optimization.backtest import EXECUTIONS, BacktestSettings, run_backtest
from cloud.optimization.planner import PlanSettings, plan_status, run_plan
from cloud.optimization.report import metrics, write_report
from cloud.store.factory import add_cloud_db_flag, open_store_from_args
from edge_gateway.cli_support import (
    ArgumentParser, add_common_flags, arg_type, device_id_arg, positive_float, positive_int, print_table, progress, run_cli,
    setup_logging,
)
from edge_gateway.config import SimulatorConfig, load_config, with_overrides

FORECASTERS = ("naive", "perfect", "models")


def timestamp(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_optimizer.py", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="plan the next horizon (the default)")
    mode.add_argument("--backtest", action="store_true", help="rolling-horizon backtest against the reference strategies")
    mode.add_argument("--status", action="store_true", help="last optimizer runs and the newest plan per device")
    parser.add_argument("--device-id", type=device_id_arg, help="site to plan (default: the config's device_id)")
    parser.add_argument("--config", help="simulator config JSON of the site (default: the built-in defaults)")
    parser.add_argument("--start", type=arg_type(timestamp, "an ISO 8601 date or time"),
                        help="plan start (default now) or first backtest day (default --days before today)")
    parser.add_argument("--horizon-hours", type=arg_type(positive_float, "a positive number of hours"), default=24.0)
    parser.add_argument("--step-minutes", type=arg_type(positive_int, "a positive whole number of minutes"), default=15)
    parser.add_argument("--publish", action="store_true", help="send the plan to der/<device_id>/battery/setpoint (MQTT_HOST, MQTT_PORT)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--days", type=arg_type(positive_int, "a positive whole number of days"), default=30, help="backtest length")
    parser.add_argument("--forecaster", choices=FORECASTERS, default="naive", help="what the plans know (default naive)")
    parser.add_argument("--execution", choices=EXECUTIONS, default=EXECUTIONS[0],
                        help="how the battery carries out plans, in the backtest and in a published schedule "
                             "(default guarded: commands, its own rule, an import cap, and a reserve kept for EV sessions)")
    parser.add_argument("--output", help="backtest report folder (default data/backtest/<device_id>)")
    add_cloud_db_flag(parser)
    add_common_flags(parser)
    return parser


def site_config(args) -> SimulatorConfig:
    config = load_config(args.config) if args.config else SimulatorConfig()
    return with_overrides(config, device_id=args.device_id) if args.device_id else config


def plan(args, config: SimulatorConfig) -> None:
    settings = PlanSettings(args.start, args.horizon_hours, args.step_minutes, args.forecaster, execution=args.execution)
    store = open_store_from_args(args)
    try:
        site_plan = run_plan(config, settings, store)
    finally:
        store.close()
    topic = None
    if args.publish:
        from cloud.optimization.publish import publish_schedule
        from edge_gateway.mqtt.settings import mqtt_settings

        topic = publish_schedule(mqtt_settings(None), config.device_id, site_plan.schedule())
    if args.json:
        print(json.dumps({**json.loads(site_plan.to_json()), "published_to": topic}, indent=2))
        return
    print_table(site_plan.table())
    summary = site_plan.summary()
    print(f"\nplan cost {summary['cost']['total']:.2f} (energy {summary['cost']['energy']:.2f}, demand "
          f"{summary['cost']['demand']:.2f}, wear {summary['cost']['wear']:.2f}); without battery "
          f"{summary['cost_without_battery']:.2f}, self-consumption rule {summary['cost_self_consumption']:.2f}")
    print(f"savings: {summary['savings_vs_no_battery']:.2f} against no battery, "
          f"{summary['savings_vs_self_consumption']:.2f} against self-consumption; written to dispatch_plans"
          + (f"; published to {topic}" if topic else ""))
    if summary["published"] == "rule":
        print(f"not sent: {summary['published_reason']}")
    expected = summary["expected_over_scenarios"]
    if expected:
        print(f"planned over {expected['scenarios']} load scenarios from recent days, the next "
              f"{settings.replan_minutes} minutes decided for all of them; the table and the costs above are "
              f"the first's. Expected over all: cost {expected['cost']:.2f}, savings "
              f"{expected['savings_vs_no_battery']:.2f} against no battery, "
              f"{expected['savings_vs_self_consumption']:.2f} against self-consumption")
    policy = summary["reserve"]
    if policy:
        print(f"reserve policy: import cap {policy['cap_kw']:.2f} kW; with no car charging the battery covers load down to "
              f"{policy['floor_above_min_kwh_now']:.1f} kWh above its minimum now, "
              f"{policy['floor_above_min_kwh_lowest']:.1f} to {policy['floor_above_min_kwh_highest']:.1f} kWh over the plan ({policy['states']} session states, "
              "learnt from the last four weeks)" + ("; the car charges at most once a day" if policy["one_session_a_day"] else ""))


def backtest(args, config: SimulatorConfig) -> None:
    settings = BacktestSettings(days=args.days, start=args.start, step_minutes=args.step_minutes,
                                horizon_hours=args.horizon_hours, forecaster=args.forecaster, execution=args.execution)
    result = run_backtest(config, settings, progress)
    path = write_report(result, Path(args.output or f"data/backtest/{config.device_id}"))
    table = metrics(result)
    if args.json:
        print(json.dumps({"report": str(path), "strategies": table.reset_index().to_dict("records")}, indent=2))
        return
    print_table(table.reset_index().to_dict("records"),
                ["strategy", "bill", "savings", "capture", "peak_import_kw", "self_consumption", "cycles", "emissions_kg"])
    print(f"\nreport: {path}")


def status(args) -> None:
    store = open_store_from_args(args)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.status:
        status(args)
        return 0
    config = site_config(args)
    if args.backtest:
        backtest(args, config)
    elif args.publish or not any((args.backtest, args.status)):
        plan(args, config)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
